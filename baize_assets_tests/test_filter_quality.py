"""The unfinished-turn and role-voice checks: their labelled cases, the sample seeds, the report."""

import re

import pandas as pd
import pytest

from baize_assets.core.config.corpus import CorpusConfig, UnfinishedTurnConfig
from baize_assets.core.config.pipeline import load_config
from baize_assets.core.corpus import build as corpus, filter_quality, reasons, report
from baize_assets.core.corpus.labelled_cases import ROLE_VOICE_CASES, UNFINISHED_CASES
from baize_assets.core.corpus.unfinished import unfinished_cause
from baize_assets.core.seeds.table import load_seed_table
from baize_assets.teacher.text import self_chat_transcript

CONFIG = CorpusConfig()
NEW_FILTERS_OFF = CorpusConfig.model_validate(
    {"unfinished_turns": {"enabled": False}, "role_voice": {"enabled": False}}
)


def test_the_labelled_sets_are_large_varied_and_distinct():
    assert len(UNFINISHED_CASES) >= 40 and len(ROLE_VOICE_CASES) >= 40
    assert {label for _, label in UNFINISHED_CASES} == {True, False}
    assert {(role, label) for role, _, label in ROLE_VOICE_CASES} == {(r, b) for r in ("human", "ai") for b in (1, 0)}
    assert len({t for t, _ in UNFINISHED_CASES}) == len(UNFINISHED_CASES)
    assert len({(r, t) for r, t, _ in ROLE_VOICE_CASES}) == len(ROLE_VOICE_CASES)


@pytest.mark.parametrize("name", ["unfinished_turns", "role_voice"])
def test_each_check_finds_its_defects_and_keeps_the_look_alikes(name):
    quality = {q.filter: q for q in filter_quality.filter_quality(CONFIG)}[name]
    wrong = filter_quality.misjudged(CONFIG)[name]
    assert quality.precision >= 0.95 and quality.recall >= 0.9 and quality.clean_kept >= 0.95, wrong


def test_a_check_turned_off_flags_nothing():
    assert [(q.true_positives, q.false_positives) for q in filter_quality.filter_quality(NEW_FILTERS_OFF)] == [
        (0, 0), (0, 0),
    ]  # fmt: skip


SIGNALS = {
    "Steps:\n```bash\nmake\n": "unclosed code block",
    "Steps:\n1. Build it.\n2.": "ends at the list marker '2.'",
    "You will need flour, water, salt,": "ends with ','",
    "The loaf is ready when it sounds hollow and the": "ends with the word 'the'",
    "Bake it at a high temperature for a short time (about twenty": "unclosed '('",
    "After that, call `bake(loaf) and wait for the oven timer to ring": "unclosed inline code",
    "The loaf is ready when it sounds hollow if you tap on its base gently": "no sentence end",
}


@pytest.mark.parametrize("text", list(SIGNALS))
def test_each_unfinished_signal_is_named(text):
    assert unfinished_cause(text, UnfinishedTurnConfig()) == SIGNALS[text]


def test_the_weak_signal_and_the_short_answer_bound_are_tunable():
    prose = "The loaf is ready when it sounds hollow if you tap on its base gently"
    assert unfinished_cause(prose, UnfinishedTurnConfig(require_sentence_end=False)) is None
    assert unfinished_cause(prose, UnfinishedTurnConfig(min_words=20)) is None
    assert unfinished_cause("The loaf is ready when the", UnfinishedTurnConfig(require_sentence_end=False)) == (
        "ends with the word 'the'"
    )
    assert unfinished_cause("It is ready when it feels", UnfinishedTurnConfig(dangling_words=["feels"])) == (
        "ends with the word 'feels'"
    )


def sample_seed_transcripts() -> pd.DataFrame:
    """The simulated teacher's transcripts of every sample seed, at two temperatures."""
    config = load_config()
    rows = [
        {"seed_id": f"{seed['seed_id']}@{temperature}", "seed": seed["seed"], "source": seed["source"],
         "shard": seed["shard"], "finish_reason": "stop",
         "transcript": self_chat_transcript(seed["seed"], config.teacher.model, temperature)}
        for source in config.sources
        for seed in load_seed_table(source).seeds.to_dict("records")
        for temperature in (0.7, 1.0)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_sample_seeds_stay_kept_and_untrimmed_with_the_new_checks_on():
    frame = sample_seed_transcripts()
    before = corpus.build_corpus(frame, NEW_FILTERS_OFF, "en")
    after = corpus.build_corpus(frame, CONFIG, "en")
    assert len(before.conversations) == len(frame) > 300
    pd.testing.assert_frame_equal(after.conversations, before.conversations)
    assert after.counts[reasons.TRIMMED_UNFINISHED_TURN] == 0 and after.counts[reasons.ROLE_VOICE] == 0


def test_the_corpus_report_shows_the_filter_quality_under_its_settings():
    kept = corpus.build_corpus(sample_seed_transcripts().head(4), CONFIG).conversations
    quality = filter_quality.quality_table(CONFIG)
    text = report.markdown_report(kept, pd.DataFrame(), {}, "quora shard 0", filter_quality=quality)
    section = re.sub(" +", " ", text.split("### Filter quality on labelled cases")[1].split("###")[0])
    assert set(quality["cases"]) == {"synthetic"}
    for row in quality.itertuples(index=False):
        assert "| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) + " |" in section
    assert "Filter quality" not in report.markdown_report(kept, pd.DataFrame(), {}, "training set")
