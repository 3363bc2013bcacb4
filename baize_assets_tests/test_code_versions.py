"""Code versions change exactly when an asset's output would: with the settings it reads, not with others."""

import copy

import pytest

from baize_assets.assets import conversations_key, seed_key, training_set_key, transcripts_key
from baize_assets.core.config import corpus as corpus_config
from baize_assets.core.config.pipeline import PipelineConfig
from baize_assets.definitions import build_definitions

from .ops_support import resources_for, write_faq_csv

# A self-chat source, a single-turn source without a declared language, and an adapter over both.
BASE = {
    "sources": [
        {"name": "faq", "format": "csv", "text_field": "question", "paths": ["faq.csv"], "shards": 2},
        {"name": "alpaca", "format": "alpaca_json", "paths": ["alpaca.json"], "shards": 2, "language": None},
    ],
    "adapters": [{"name": "faq_bot", "sources": ["faq", "alpaca"]}],
}
FAQ_CORPUS = conversations_key("faq")
ALPACA_CORPUS = conversations_key("alpaca")
TRAINING_SET = training_set_key("faq_bot")
FAQ_SEEDS = seed_key("faq")
FAQ_TRANSCRIPTS = transcripts_key("faq")


def with_setting(raw: dict, path: str, value) -> dict:
    """``raw`` with the setting at dotted ``path`` (list items by index) set to ``value``."""
    changed = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(last) if isinstance(node, list) else last] = value
    return changed


def code_version(raw: dict, key, tmp_path) -> str:
    defs = build_definitions(PipelineConfig.model_validate(raw), resources_for(tmp_path / "out"))
    return defs.resolve_assets_def(key).code_versions_by_key[key]


CHANGES_OUTPUT = [
    # The corpus: every filter that decides what a shard keeps, and the signatures it stores.
    (FAQ_CORPUS, "corpus.min_exchanges", 2),
    (FAQ_CORPUS, "corpus.turn_length.max_chars", 4000),
    (FAQ_CORPUS, "corpus.scrub.emails", True),
    (FAQ_CORPUS, "corpus.near_dedup.num_perm", 64),
    (FAQ_CORPUS, "corpus.language.min_confidence", 0.6),
    (FAQ_CORPUS, "corpus.unfinished_turns.min_words", 4),
    (FAQ_CORPUS, "corpus.repetition.enabled", False),
    (FAQ_CORPUS, "sources.0.language", "fr"),
    (ALPACA_CORPUS, "corpus.refusals", False),
    (FAQ_CORPUS, "corpus.ai_disclaimers", False),
    # The training set: its split, its dedup, what its card says.
    (TRAINING_SET, "adapters.0.training.eval_size", 100),
    (TRAINING_SET, "adapters.0.training.eval_size", 0.05),
    (TRAINING_SET, "corpus.near_dedup.threshold", 0.8),
    (TRAINING_SET, "corpus.near_dedup.enabled", False),
    (TRAINING_SET, "teacher.model", "another-teacher"),
    (TRAINING_SET, "sources.1.domain", "instructions"),
    (TRAINING_SET, "corpus.judge_filter", {"enabled": True, "min_score": 7}),
    # The seed table: where and how seeds are read, checked and sharded.
    (FAQ_SEEDS, "sources.0.format", "jsonl"),
    (FAQ_SEEDS, "sources.0.paths", ["other.csv"]),
    (FAQ_SEEDS, "sources.0.text_field", "title"),
    (FAQ_SEEDS, "sources.0.shards", 3),
    (FAQ_SEEDS, "sources.0.encoding", "latin-1"),
    (FAQ_SEEDS, "sources.0.max_seed_chars", 500),
    (FAQ_SEEDS, "sources.0.self_chat", False),
    # The transcripts: what shapes the teacher's answers.
    (FAQ_TRANSCRIPTS, "teacher.temperature", 0.5),
]

KEEPS_OUTPUT = [
    # Checks and training-set-only settings do not touch a corpus shard.
    (FAQ_CORPUS, "corpus.min_kept_ratio", 0.9),
    (FAQ_CORPUS, "corpus.real_text_quality", True),
    (FAQ_CORPUS, "corpus.judge_filter", {"enabled": True, "min_score": 7}),
    (FAQ_CORPUS, "corpus.near_dedup.threshold", 0.8),
    (FAQ_CORPUS, "adapters.0.training.eval_size", 100),
    (FAQ_CORPUS, "sources.0.domain", "faq"),
    # A source without a declared language skips the language filter; single-turn pairs are not parsed.
    (ALPACA_CORPUS, "corpus.language.min_confidence", 0.6),
    (ALPACA_CORPUS, "corpus.unfinished_turns.min_words", 4),
    (ALPACA_CORPUS, "corpus.role_voice.min_advice_cues", 3),
    # The training set does not read training hyperparameters, collection settings or the check floors.
    (TRAINING_SET, "adapters.0.training.learning_rate", 1e-3),
    (TRAINING_SET, "teacher.max_concurrency", 32),
    (TRAINING_SET, "corpus.min_kept_ratio", 0.9),
    (TRAINING_SET, "corpus.min_exchanges", 2),
    (TRAINING_SET, "corpus.judge_filter.min_score", 7),  # the filter is off
    # The seed table does not depend on what happens to the seeds later.
    (FAQ_SEEDS, "sources.0.domain", "faq"),
    (FAQ_SEEDS, "sources.0.language", "fr"),
    (FAQ_SEEDS, "corpus.min_exchanges", 2),
    (FAQ_SEEDS, "teacher.model", "another-teacher"),
    # Collection settings do not change a transcript.
    (FAQ_TRANSCRIPTS, "teacher.max_concurrency", 32),
]


def case_id(case) -> str:
    key, path, value = case
    return f"{key.to_user_string()}:{path}={value}"


@pytest.mark.parametrize("case", CHANGES_OUTPUT, ids=case_id)
def test_a_setting_that_changes_the_output_changes_the_code_version(case, tmp_path):
    key, path, value = case
    assert code_version(with_setting(BASE, path, value), key, tmp_path) != code_version(BASE, key, tmp_path)


@pytest.mark.parametrize("case", KEEPS_OUTPUT, ids=case_id)
def test_a_setting_that_leaves_the_output_keeps_the_code_version(case, tmp_path, monkeypatch):
    key, path, value = case
    # real_text_quality is refused without the realtext extra (tested in test_real_text.py);
    # whether that extra is installed has nothing to do with a shard's code version.
    monkeypatch.setattr(corpus_config, "find_spec", lambda name: object())
    assert code_version(with_setting(BASE, path, value), key, tmp_path) == code_version(BASE, key, tmp_path)


def test_the_seed_files_contents_are_not_part_of_the_seed_tables_code_version(tmp_path):
    csv = write_faq_csv(tmp_path / "faq.csv", ["How do tides work?"])
    raw = with_setting(BASE, "sources.0.paths", [str(csv)])
    before = code_version(raw, FAQ_SEEDS, tmp_path)
    write_faq_csv(csv, ["How do tides work?", "Why is the sea salty?"])
    assert code_version(raw, FAQ_SEEDS, tmp_path) == before


def test_the_parameters_of_a_switched_off_filter_are_not_part_of_the_corpus_code_version(tmp_path):
    switched_off = with_setting(BASE, "corpus.repetition", {"enabled": False})
    retuned = with_setting(switched_off, "corpus.repetition.ngram", 5)
    assert code_version(retuned, FAQ_CORPUS, tmp_path) == code_version(switched_off, FAQ_CORPUS, tmp_path)
