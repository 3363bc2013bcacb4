"""A training set in the shape other tools read unchanged: chat messages, one Parquet file per split, a card.

``datasets``, trl, axolotl and LLaMA-Factory all read OpenAI-style ``messages``
(``{role: user | assistant, content}``) as they are, and each takes whole files (or a
named split) as its training or evaluation data: none of their configs filters rows by a
column. So the held-out conversations get their own file: ``train.parquet`` and
``eval.parquet`` side by side, which the dataset card's ``configs`` maps to the splits
``train`` and ``eval``. A split with no conversation gets no file, because ``datasets``
cannot read an empty Parquet file. The training-set Parquet itself stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..config.pipeline import SourceConfig, TeacherConfig
from ..messages import turns_to_messages
from ..prompts import SELF_CHAT_PROMPT_VERSION, SELF_CHAT_TURN_PROMPT_VERSION
from ..storage import staged_output_dir
from .schema import turns_of

SPLITS = ("train", "eval")
CARD_FILE = "README.md"
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
CHAT_SCHEMA = pa.schema(
    [("messages", pa.list_(MESSAGE_TYPE)), ("seed_id", pa.string()), ("source", pa.string()), ("split", pa.string())]
)
# The Hub's size categories: the first whose bound is above the row count.
_SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
]  # fmt: skip
# The rows come from the seed sources and the teacher's output, each under its own terms.
LICENSE_NAME = "baize-seed-sources-and-teacher-terms"
TAGS = ("baize", "self-chat", "synthetic", "conversational", "sft")


@dataclass(frozen=True)
class Provenance:
    """How a training set was made, as its card tells it."""

    name: str
    sources: Sequence[SourceConfig]
    teacher: TeacherConfig
    data_version: str
    eval_size: int | float
    exact_duplicates: int = 0
    near_duplicates: int = 0
    # Corpus rejects and duplicates per reason, over all the set's shards.
    dropped_by_reason: dict[str, int] = field(default_factory=dict)


def chat_dir(training_set_path: Path) -> Path:
    """The chat-shaped copy of a training set: a folder beside its file, named like it without the suffix."""
    return training_set_path.with_suffix("")


def chat_rows(conversations: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation: its turns as chat ``messages``, its seed id, source and split."""
    return pd.DataFrame(
        {
            "messages": [turns_to_messages(turns) for turns in turns_of(conversations)],
            "seed_id": conversations["seed_id"].to_numpy(),
            "source": conversations["source"].to_numpy(),
            "split": conversations["split"].to_numpy(),
        }
    )


def counts_by_source(rows: pd.DataFrame) -> pd.DataFrame:
    """Conversations per source (rows) and split (columns), with totals."""
    table = rows.groupby(["source", "split"]).size().unstack(fill_value=0).reindex(columns=SPLITS, fill_value=0)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum()
    return table.astype(int).reset_index(names="source")


def size_category(n_rows: int) -> str:
    return next((name for bound, name in _SIZE_CATEGORIES if n_rows < bound), "n>1B")


def card_metadata(rows: pd.DataFrame, provenance: Provenance) -> dict:
    """The card's YAML front matter: what the Hub indexes and the split files ``datasets`` loads."""
    languages = sorted({s.language for s in provenance.sources if s.language})
    present = [split for split in SPLITS if (rows["split"] == split).any()]
    metadata = {
        "pretty_name": f"Baize self-chat corpus: {provenance.name}",
        "license": "other",
        "license_name": LICENSE_NAME,
        **({"language": languages} if languages else {}),
        "task_categories": ["text-generation"],
        "task_ids": ["dialogue-modeling"],
        "annotations_creators": ["machine-generated"],
        "language_creators": ["machine-generated"],
        "size_categories": [size_category(len(rows))],
        "tags": [*TAGS, *sorted({s.domain for s in provenance.sources})],
    }
    if present:
        data_files = [{"split": split, "path": f"{split}.parquet"} for split in present]
        metadata["configs"] = [{"config_name": "default", "data_files": data_files}]
    return metadata


def _source_lines(sources: Sequence[SourceConfig]) -> str:
    return "\n".join(
        f"- `{s.name}` ({s.domain}, {s.format} seeds): "
        + ("self-chat, both sides written by the teacher" if s.is_self_chat else "single-turn pairs used as they are")
        + (f", language `{s.language}`" if s.language else "")
        for s in sources
    )


def _teacher_line(provenance: Provenance) -> str:
    teacher = provenance.teacher
    if not any(s.is_self_chat for s in provenance.sources):
        return "No teacher: every source is single-turn data."
    prompt = SELF_CHAT_PROMPT_VERSION if teacher.mode == "v1" else SELF_CHAT_TURN_PROMPT_VERSION
    return (
        f"Teacher: `{teacher.model}`, mode `{teacher.mode}` (self-chat prompt `{prompt}`), temperature "
        f"{teacher.temperature:g}, at most {teacher.max_rounds} exchanges per conversation."
    )


def dataset_card(rows: pd.DataFrame, provenance: Provenance) -> str:
    """The ``README.md`` of the chat-shaped training set: front matter, counts, how it was made, how to load it."""
    p = provenance
    front = yaml.safe_dump(card_metadata(rows, p), sort_keys=False, allow_unicode=True)
    eval_rule = (
        f"a fraction of {p.eval_size:g}"
        if isinstance(p.eval_size, float)
        else f"{p.eval_size} conversations (at most a fifth)"
    )
    dropped = "\n".join(f"| {reason} | {count} |" for reason, count in sorted(p.dropped_by_reason.items()))
    sections = [
        f"---\n{front}---",
        f"# Baize self-chat corpus: {p.name}",
        "Multi-turn chat conversations in the shape of [Baize](https://arxiv.org/abs/2304.01196): a teacher model "
        "wrote both sides of a conversation about each seed question. Each row holds one conversation as "
        "OpenAI-style `messages`.",
        f"Data version: `{p.data_version}` (a fingerprint of every conversation's seed id and text; it changes "
        "when any conversation does).",
        "## Conversations per source and split",
        counts_by_source(rows).to_markdown(index=False) if len(rows) else "_empty_",
        "## Columns",
        "| column | type | what it holds |\n|---|---|---|\n"
        "| `messages` | list of `{role, content}` | the turns in order; `role` is `user` or `assistant` |\n"
        "| `seed_id` | string | stable id of the seed (a hash of its normalized text) |\n"
        "| `source` | string | the seed source the conversation came from |\n"
        "| `split` | string | `train` or `eval`, the same as the file it is in |",
        "## How it was made",
        f"Sources:\n\n{_source_lines(p.sources)}",
        _teacher_line(p),
        "Each transcript was parsed into turns and filtered, every dropped conversation with its reason (below). "
        "Duplicates were then removed across every shard of the sources, exact ones "
        f"({p.exact_duplicates}) and near ones by MinHash ({p.near_duplicates}), keeping the smallest seed id of "
        "each group.",
        "| dropped because | conversations |\n|---|---|\n" + dropped if dropped else "Nothing was dropped.",
        f"The split is a hash of each seed id, holding out {eval_rule}; a conversation keeps its split when other "
        "shards change.",
        "## Loading",
        "```python\nfrom datasets import load_dataset\n\n"
        'corpus = load_dataset("path/to/this/folder")  # splits "train" and "eval"\n'
        'train = load_dataset("parquet", data_files={"train": "train.parquet"}, split="train")\n```',
        "trl's `SFTTrainer` trains on `corpus[\"train\"]` as it is (it reads `messages`), with the model's chat "
        "template; `assistant_only_loss=True` keeps the loss on the assistant turns, as Baize trains.",
        "## License",
        "The conversations derive from the seed sources above and from the teacher model's output, each under its "
        "own terms (the seed datasets' licenses and the teacher provider's terms of use). Set `license` to what "
        "those terms allow before publishing this folder.",
    ]
    return "\n\n".join(sections) + "\n"


def write_chat_dataset(conversations: pd.DataFrame, directory: Path, provenance: Provenance) -> dict[str, int]:
    """Write ``train.parquet``, ``eval.parquet`` and the card into ``directory``, replacing it whole.

    ``conversations`` is a training set (``trainingset.TRAINING_SET_SCHEMA``); returns the rows per split.
    """
    missing = [c for c in ("seed_id", "source", "split", "turns") if c not in conversations]
    if missing:
        raise ValueError(f"training set {provenance.name} has no column {', '.join(missing)}")
    unknown = sorted(set(conversations["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"training set {provenance.name}: split {unknown[0]!r} is not one of {', '.join(SPLITS)}")
    rows = chat_rows(conversations)
    with staged_output_dir(directory) as staging:
        for split in SPLITS:
            part = rows[rows["split"] == split]
            if len(part):
                pq.write_table(
                    pa.Table.from_pandas(part, schema=CHAT_SCHEMA, preserve_index=False), staging / f"{split}.parquet"
                )
        (staging / CARD_FILE).write_text(dataset_card(rows, provenance), encoding="utf-8")
    return {split: int((rows["split"] == split).sum()) for split in SPLITS}
