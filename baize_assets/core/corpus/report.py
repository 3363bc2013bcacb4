"""A readable report of a corpus or training set: Markdown tables, PNG plots, samples.

The headline numbers are the paper's (Baize, table 1): dialogs, average turns (exchanges
per dialog) and average response length (words per AI turn), per source. A corpus
report also shows how well the text filters do on labelled cases, synthetic and, with
``real_text_quality``, real (``filter_quality.quality_table``), under the settings that built it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..storage import staged_output_file

_LENGTH_BINS = [0, 10, 30, 60, 100, 150, 250, 500, np.inf]


def _response_words(conversations: pd.DataFrame) -> pd.DataFrame:
    rows = [
        (source, len(turn["text"].split()))
        for source, turns in zip(conversations["source"], conversations["turns"])
        for turn in turns
        if turn["role"] == "ai"
    ]
    return pd.DataFrame(rows, columns=["source", "words"])


def paper_table(conversations: pd.DataFrame) -> pd.DataFrame:
    """Per source: dialogs, average turns, average response length in words."""
    words = _response_words(conversations)
    table = conversations.groupby("source").agg(dialogs=("seed_id", "size"), avg_turns=("n_exchanges", "mean"))
    table["avg_response_words"] = words.groupby("source")["words"].mean()
    return table.round(2).reset_index()


def reason_table(kept: pd.Series, dropped: pd.DataFrame) -> pd.DataFrame:
    """Per source: kept count and dropped count per reason (``dropped`` has source, reason)."""
    table = dropped.groupby(["source", "reason"]).size().unstack(fill_value=0) if len(dropped) else pd.DataFrame()
    table = table.reindex(kept.index.union(table.index), fill_value=0)
    table.insert(0, "kept", kept.reindex(table.index, fill_value=0))
    return table.astype(int).reset_index(names="source")


def distributions(conversations: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(exchanges per conversation, words per response) as counts per source."""
    exchanges = conversations.groupby(["n_exchanges", "source"]).size().unstack(fill_value=0)
    words = _response_words(conversations)
    words["bin"] = pd.cut(words["words"], _LENGTH_BINS, right=False).astype(str)
    lengths = words.groupby(["bin", "source"], sort=False).size().unstack(fill_value=0)
    order = [str(b) for b in pd.cut(pd.Series(_LENGTH_BINS[:-1]), _LENGTH_BINS, right=False).cat.categories]
    return exchanges.reset_index(), lengths.reindex([o for o in order if o in lengths.index]).reset_index()


def samples(conversations: pd.DataFrame, n: int = 3, chars: int = 600) -> str:
    """The first ``n`` conversations by seed id (stable), as quoted Markdown."""
    parts = []
    for _, row in conversations.sort_values("seed_id").head(n).iterrows():
        body = "\n".join(f"> **{t['role']}**: {t['text'][:chars]}" for t in row["turns"])
        parts.append(f"`{row['seed_id']}` ({row['source']}, shard {row['shard']})\n\n{body}")
    return "\n\n".join(parts) if parts else "_none_"


def _save_figure(figure, path: Path) -> Path:
    with staged_output_file(path) as staging:
        figure.savefig(staging, format="png", dpi=90, bbox_inches="tight")
    return path


def plot_distributions(conversations: pd.DataFrame, directory: Path) -> dict[str, Path]:
    """PNG histograms of exchanges per conversation and words per response, by source."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    words = _response_words(conversations)
    plots = {}
    for name, frame, column, label in (
        ("exchanges_per_conversation", conversations, "n_exchanges", "exchanges per conversation"),
        ("words_per_response", words, "words", "words per AI response"),
    ):
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for source, values in frame.groupby("source")[column]:
            axes.hist(
                values, bins=30 if column == "words" else np.arange(0.5, values.max() + 1.5), alpha=0.6, label=source
            )
        if column == "n_exchanges":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole exchanges, not 0.5 steps
        axes.set_xlabel(label)
        axes.set_ylabel("count")
        axes.legend()
        plots[name] = _save_figure(figure, directory / f"{name}.png")
        plt.close(figure)
    return plots


def markdown_report(
    conversations: pd.DataFrame,
    reasons: pd.DataFrame,
    plots: dict[str, Path],
    title: str,
    n_samples: int = 3,
    filter_quality: pd.DataFrame | None = None,
) -> str:
    """The whole report as one Markdown document; ``filter_quality`` adds its section."""
    exchanges, lengths = distributions(conversations)

    def table(frame: pd.DataFrame) -> str:
        return frame.to_markdown(index=False) if len(frame) else "_empty_"

    links = "\n".join(f"- [{name}]({path.as_uri()})" for name, path in plots.items())
    quality = (
        []
        if filter_quality is None
        else ["### Filter quality on labelled cases (precision, recall, clean look-alikes kept)",
              table(filter_quality)]
    )  # fmt: skip
    return "\n\n".join(
        [
            f"## {title}",
            "### Paper comparison (dialogs, avg exchanges, avg words per response)",
            table(paper_table(conversations)) if len(conversations) else "_empty_",
            "### Kept and dropped, by reason",
            table(reasons),
            "### Exchanges per conversation",
            table(exchanges),
            "### Words per AI response",
            table(lengths),
            "### Plots",
            links or "_none_",
            *quality,
            "### Samples",
            samples(conversations, n_samples),
        ]
    )
