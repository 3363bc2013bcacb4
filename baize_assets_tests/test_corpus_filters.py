"""Corpus filters, bad input and near-duplicate removal."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from datasketch import MinHash
from hypothesis import given, settings, strategies as st

from baize_assets.core.collect.transcript import TRANSCRIPT_SCHEMA
from baize_assets.core.config.pipeline import CorpusConfig, NearDedupConfig, ScrubConfig
from baize_assets.core.corpus import build as corpus, dedup, langid, parse, reasons, schema, shingles
from baize_assets.core.corpus.trainingset import EXACT_DUPLICATE, NEAR_DUPLICATE, build_training_set
from baize_assets.core.prompts import RAW_AI, RAW_HUMAN, Turn
from baize_assets.core.seeds.table import normalize_text

CONFIG = CorpusConfig()
ANSWER = "Rain forms when water vapour condenses into droplets that grow heavy enough to fall from the clouds."


def table(*texts, finish_reason="stop") -> pd.DataFrame:
    rows = [
        {"seed_id": f"id{i}", "seed": f"seed {i}", "source": "quora", "shard": 0, "transcript": text,
         "finish_reason": finish_reason, "failure_kind": None, "failure_message": None}
        for i, text in enumerate(texts)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=[f.name for f in TRANSCRIPT_SCHEMA])


def outcome(built: corpus.Corpus) -> dict[str, str]:
    kept = dict.fromkeys(built.conversations["seed_id"], "kept")
    return {**kept, **dict(zip(built.rejects["seed_id"], built.rejects["reason"]))}


def test_each_filter_rejects_with_its_reason_and_every_reason_is_counted():
    looping = " ".join(["the cat sat on the mat."] * 10)
    built = corpus.build_corpus(
        table(
            f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} {ANSWER}",
            f"{RAW_HUMAN} Why?\n{RAW_AI} I'm sorry, but I cannot help with that request today.",
            f"{RAW_HUMAN} Who are you?\n{RAW_AI} I am ChatGPT, a model trained by OpenAI.",
            f"{RAW_HUMAN} What is ChatGPT?\n{RAW_AI} ChatGPT is a chatbot product released in 2022 by a lab.",
            f"{RAW_HUMAN} Tell me.\n{RAW_AI} {looping}",
            f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}\n{RAW_HUMAN} Again?\n{RAW_AI} {ANSWER}",
            f"{RAW_HUMAN} Pourquoi pleut-il?\n{RAW_AI} La pluie se forme lorsque la vapeur d'eau se condense "
            "en gouttelettes assez lourdes pour tomber des nuages.",
            f"{RAW_HUMAN} Q\n{RAW_AI} {ANSWER}",
            f"{RAW_HUMAN} Why?\n{RAW_AI} {'word ' * 2000}end.",
        ),
        CONFIG,
        "en",
    )
    assert outcome(built) == {
        "id0": "kept", "id1": reasons.REFUSAL, "id2": reasons.OPENAI_MENTION, "id3": "kept",
        "id4": reasons.REPETITION, "id5": reasons.REPETITION, "id6": reasons.WRONG_LANGUAGE,
        "id7": reasons.TURN_TOO_SHORT, "id8": reasons.TURN_TOO_LONG,
    }  # fmt: skip
    counts = built.reason_counts()
    assert set(counts) == set(reasons.REASONS)
    assert counts[reasons.REPETITION] == 2 and counts[reasons.TEACHER_FAILURE] == 0
    assert built.rejects.set_index("seed_id").loc["id1", "detail"] == "turn 1: 'I'm sorry, but I cannot'"


def test_filters_can_be_turned_off():
    config = CORPUS_OFF = CorpusConfig.model_validate(
        {"refusals": False, "ai_disclaimers": False, "openai_mentions": False, "repetition": {"enabled": False},
         "turn_length": {"min_chars": None}, "language": {"enabled": False}}
    )  # fmt: skip
    built = corpus.build_corpus(
        table(
            f"{RAW_HUMAN} Q\n{RAW_AI} As an AI language model, I am ChatGPT.",
            f"{RAW_HUMAN} Pourquoi?\n{RAW_AI} Parce que la vapeur d'eau se condense.",
        ),
        config,
        "en",
    )
    assert outcome(built) == {"id0": "kept", "id1": "kept"}
    assert CORPUS_OFF.min_exchanges == 1


def test_truncated_transcripts_keep_complete_exchanges_or_are_dropped():
    text = f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}\n{RAW_HUMAN} And then?\n{RAW_AI} It falls and"
    kept = corpus.build_corpus(table(text, finish_reason="length"), CONFIG)
    assert [t["text"] for t in kept.conversations.iloc[0]["turns"]] == ["Why?", ANSWER]
    assert kept.counts[reasons.TRIMMED_CUT_OFF_TURN] == 1
    dropped = corpus.build_corpus(table(text, finish_reason="length"), CorpusConfig(truncated="drop"))
    assert outcome(dropped) == {"id0": reasons.TRUNCATED}


def test_scrubbing_replaces_and_counts_personal_data():
    text = f"{RAW_HUMAN} How do I reach you?\n{RAW_AI} Write to help@example.com, call +1 555-123-4567 or see https://example.com/help."
    built = corpus.build_corpus(table(text), CorpusConfig(scrub=ScrubConfig(emails=True, phones=True, urls=True)))
    answer = built.conversations.iloc[0]["turns"][1]["text"]
    assert answer == "Write to <email>, call <phone> or see <url>"
    assert {k: built.counts[k] for k in reasons.SCRUBBED.values()} == {
        "scrubbed_emails": 1, "scrubbed_phones": 1, "scrubbed_urls": 1,
    }  # fmt: skip


BAD_INPUT = {
    "null": (None, reasons.EMPTY_TRANSCRIPT),
    "empty": ("", reasons.EMPTY_TRANSCRIPT),
    "spaces": ("  \n\t ", reasons.EMPTY_TRANSCRIPT),
    "no markers": ("just some prose", reasons.NO_TURNS),
    "odd unicode": (f"\ufeff{RAW_HUMAN} Cafe\u0301 \u200bnaïve?\r\n{RAW_AI} Oui — très bien 👍 {ANSWER}", "kept"),
    "mixed line ends": (
        f"{RAW_HUMAN} Hi there?\r{RAW_AI} {ANSWER}\r\n{RAW_HUMAN} More?\n{RAW_AI} {ANSWER[:50]}",
        "kept",
    ),
    "extra spaces": (f"[  Human  ] :  Why?\n[ AI ]   {ANSWER}", "kept"),
    "missing open bracket": (f"Human] Why?\nAI] {ANSWER}", "kept"),
    "missing close bracket": (f"[Human Why?\n[AI {ANSWER}", "kept"),
    "preamble": (f"Sure! Here it is:\n{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}", "kept"),
    "one line": (f"{RAW_HUMAN} Why? {RAW_AI} {ANSWER}", "kept"),
    "colon labels": (f"Human: Why?\nAI: {ANSWER}", "kept"),
    "marker inside turn": (f"{RAW_HUMAN} Why?\n{RAW_AI} Type {RAW_HUMAN} to start. {ANSWER}", reasons.MARKER_IN_TURN),
    "training marker inside": (f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER} [|Human|] next", reasons.MARKER_IN_TURN),
    "control chars": (f"{RAW_HUMAN} Why\x00?\n{RAW_AI} {ANSWER}\x07", "kept"),
    "only a question": (f"{RAW_HUMAN} Why?", reasons.NO_TURNS),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_parses_or_is_rejected_with_a_reason(name):
    text, expected = BAD_INPUT[name]
    built = corpus.build_corpus(table(text), CONFIG, "en")
    assert outcome(built) == {"id0": expected}
    if expected == "kept":
        turns = built.conversations.iloc[0]["turns"]
        assert turns[0]["role"] == "human" and all(t["text"].strip() for t in turns)
        assert not any(ch in t["text"] for t in turns for ch in "\ufeff\u200b\r\x00\x07")
    else:
        stored = built.rejects.iloc[0]["transcript"]
        assert stored == text if isinstance(text, str) else pd.isna(stored)


def test_rows_with_missing_ids_are_rejected_not_raised():
    frame = table(f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}", f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}")
    frame.loc[0, "seed_id"] = None
    frame["shard"] = frame["shard"].astype(object)
    frame.loc[1, "shard"] = None
    built = corpus.build_corpus(frame, CONFIG)
    assert built.rejects["reason"].tolist() == [reasons.INVALID_ROW, reasons.INVALID_ROW]
    assert built.rejects["detail"].tolist() == ["missing or invalid seed_id", "missing or invalid shard"]


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Cf"), blacklist_characters="[]［］"),
    min_size=1, max_size=60,
).map(str.strip).filter(lambda s: s and ":" not in s and s == parse.clean_text(s))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_text, _text), min_size=1, max_size=5),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.sampled_from(["[Human]", "[ human ]", "[HUMAN]:"]),
    st.sampled_from(["", "Sure, here is the transcript.\n"]),
)
def test_parse_of_render_is_the_conversation_for_any_marker_style(exchanges, newline, human, preamble):
    turns = [t for q, a in exchanges for t in (Turn("human", q), Turn("ai", a))]
    raw = preamble + newline.join(f"{human if t.role == 'human' else RAW_AI} {t.text}" for t in turns)
    parsed = parse.parse_transcript(raw)
    if [(t.role, t.text.lower()) for t in turns[:2]] == [("human", "hello!"), ("ai", "hi! how can i help you?")]:
        turns = turns[2:]
    if not turns:
        assert parsed.reason == reasons.NO_TURNS
        return
    assert parsed.reason is None
    assert parsed.turns == turns
    assert (reasons.TRIMMED_PREAMBLE in parsed.trimmed) == bool(preamble)


@given(st.lists(st.one_of(st.none(), st.text(max_size=200)), max_size=8))
def test_build_corpus_never_raises_and_accounts_for_every_row(texts):
    built = corpus.build_corpus(table(*texts), CorpusConfig(language={"enabled": False}))
    assert len(built.conversations) + len(built.rejects) == len(texts)
    assert not set(built.conversations["seed_id"]) & set(built.rejects["seed_id"])


def test_vectorized_minhash_equals_datasketch_minhash():
    texts = ["the quick brown fox jumps over the lazy dog", "", "two words", "a b c a b c a b c"]
    found = shingles.shingles_of(texts, 3)
    signatures = dedup.minhash_of_hashes(found.hashes, found.offsets, 64, 7)
    for index in range(len(texts)):
        reference = MinHash(num_perm=64, seed=7, hashfunc=int)
        reference.update_batch(found.hashes[found.offsets[index] : found.offsets[index + 1]].tolist())
        np.testing.assert_array_equal(reference.hashvalues, signatures[index])


def conversation_frame(answers: dict[str, str]) -> pd.DataFrame:
    # The answers are word soup without sentence ends: only dedup is under test here.
    config = CorpusConfig.model_validate({"unfinished_turns": {"enabled": False}})
    built = corpus.build_corpus(
        table(*(f"{RAW_HUMAN} Tell me about rain please.\n{RAW_AI} {a}" for a in answers.values())), config
    )
    frame = built.conversations.sort_values("seed_id")
    frame["seed_id"] = list(answers)
    return frame


def test_near_duplicates_across_shards_are_dropped_with_the_id_they_duplicate():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(5000)]
    base = " ".join(rng.choice(vocabulary, 120))
    edited = base.split()
    edited[60] = "changed"
    frame = conversation_frame({"b": base, "a": " ".join(edited), "c": " ".join(rng.choice(vocabulary, 120))})
    built = build_training_set(frame, 0.0, NearDedupConfig())
    assert sorted(built.conversations["seed_id"]) == ["a", "c"]
    row = built.duplicates.iloc[0]
    assert (row["seed_id"], row["reason"], row["duplicate_of"]) == ("b", NEAR_DUPLICATE, "a")
    assert 0.8 < row["similarity"] < 1.0
    off = build_training_set(frame, 0.0, NearDedupConfig(enabled=False))
    assert len(off.conversations) == 3 and EXACT_DUPLICATE not in set(off.duplicates["reason"])


def test_missing_signatures_are_recomputed_to_the_same_result():
    rng = np.random.default_rng(1)
    vocabulary = [f"w{i}" for i in range(5000)]
    base = " ".join(rng.choice(vocabulary, 80))
    frame = conversation_frame({"x": base, "y": base.replace(base.split()[40], "other", 1)})
    stored = build_training_set(frame, 0.0, NearDedupConfig())
    frame["minhash_version"] = None
    recomputed = build_training_set(frame, 0.0, NearDedupConfig())
    assert recomputed.recomputed_signatures == 2
    pd.testing.assert_frame_equal(stored.duplicates, recomputed.duplicates)


def test_schema_problems_name_row_and_field():
    good = conversation_frame({"a": ANSWER})
    table_ = pa.Table.from_pandas(good, schema=schema.CONVERSATION_SCHEMA, preserve_index=False)
    assert schema.schema_problems(table_) == []
    broken = good.copy()
    broken.at[broken.index[0], "turns"] = [{"role": "human", "text": "Q"}, {"role": "ai", "text": " "}]
    problems = schema.schema_problems(
        pa.Table.from_pandas(broken, schema=schema.CONVERSATION_SCHEMA, preserve_index=False)
    )
    assert problems == ["row 0 (seed_id a): empty turn"]
    assert schema.schema_problems(table_.drop_columns(["text"])) == ["no column 'text'"]


NOT_ENGLISH = {
    "fr": "La pluie se forme lorsque la vapeur d'eau se condense en gouttelettes assez lourdes pour tomber des nuages.",
    "de": "Regen entsteht, wenn Wasserdampf zu Tröpfchen kondensiert, die schwer genug sind, um aus den Wolken zu "
    "fallen, also was will man machen.",
    "nl": "Regen ontstaat wanneer waterdamp condenseert tot druppels die zwaar genoeg zijn om uit de wolken te vallen, "
    "of is dat niet zo?",
    "es": "La lluvia se forma cuando el vapor de agua se condensa en gotas lo bastante pesadas para caer de las nubes.",
}


def test_english_pre_check_settles_english_prose_and_leaves_other_languages_to_lingua(monkeypatch):
    share, words = langid.english_word_share([ANSWER, *NOT_ENGLISH.values()])
    assert share[0] >= CONFIG.language.english_word_share and words[0] == len(ANSWER.split())
    assert share[1:].tolist() == [0.0] * len(NOT_ENGLISH)
    scored = []
    detector = langid._detector(tuple(sorted(CONFIG.language.candidates)))
    original = type(detector).compute_language_confidence_in_parallel

    class Spy:
        def compute_language_confidence_in_parallel(self, texts, language):
            scored.extend(texts)
            return original(detector, texts, language)

    monkeypatch.setattr(langid, "_detector", lambda candidates: Spy())
    texts = [ANSWER, "Why?", *NOT_ENGLISH.values()]
    confidence = langid.language_confidence(texts, "en", CONFIG.language.candidates, 0.15)
    assert scored == texts[1:]  # the English answer never reached lingua; the short one did
    assert confidence[0] == 1.0 and (confidence[2:] < CONFIG.language.min_confidence).all()
    scored.clear()
    langid.language_confidence(texts, "en", CONFIG.language.candidates, None)
    assert scored == texts


def test_other_languages_are_rejected_with_the_pre_check_on():
    built = corpus.build_corpus(
        table(*(f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} {text}" for text in (ANSWER, *NOT_ENGLISH.values()))),
        CONFIG,
        "en",
    )
    assert outcome(built) == {"id0": "kept", **{f"id{i + 1}": reasons.WRONG_LANGUAGE for i in range(len(NOT_ENGLISH))}}


def test_exact_duplicate_keys_normalize_like_the_seed_normalizer():
    texts = ["A  b\u00a0C\u2003d\x1c e ", "a b c d e", "e\u0301 X", "\u00e9 x", "", "  ", "a b c d f"]
    assert dedup.normalized_texts(texts).to_pylist() == [normalize_text(t).lower() for t in texts]
    spaces = [f" a{c}{c}B{c}" for c in map(chr, range(0x3001)) if c.isspace()]  # every Unicode space
    assert dedup.normalized_texts(spaces).to_pylist() == ["a b"] * len(spaces)
    assert dedup.exact_groups(texts).tolist() == [0, 0, 1, 1, 2, 2, 3]


CUT = "Rain forms when water vapour condenses, and the droplets then merge until they are heavy enough to"


def test_an_unfinished_last_turn_is_trimmed_with_its_question_and_counted():
    frame = table(
        f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} {ANSWER}\n{RAW_HUMAN} And then?\n{RAW_AI} {CUT}",
        f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} {CUT}",
        f"{RAW_HUMAN} Show me.\n{RAW_AI} Like this:\n```python\nprint('rain')\n```\nThat prints it",
    )
    built = corpus.build_corpus(frame, CONFIG)
    assert outcome(built) == {"id0": "kept", "id1": reasons.UNFINISHED_TURN, "id2": "kept"}
    assert [t["text"] for t in built.conversations.set_index("seed_id").loc["id0", "turns"]] == [
        "Why does it rain?", ANSWER,
    ]  # fmt: skip
    assert built.counts[reasons.TRIMMED_UNFINISHED_TURN] == 1
    assert built.rejects.iloc[0]["detail"] == (
        "the AI turn ends unfinished (ends with the word 'to'), no complete exchange before it"
    )
    dropped = corpus.build_corpus(frame, CorpusConfig(truncated="drop"))
    assert outcome(dropped) == {"id0": reasons.UNFINISHED_TURN, "id1": reasons.UNFINISHED_TURN, "id2": "kept"}
    off = corpus.build_corpus(frame, CorpusConfig.model_validate({"unfinished_turns": {"enabled": False}}))
    assert outcome(off) == {"id0": "kept", "id1": "kept", "id2": "kept"}
    assert off.counts[reasons.TRIMMED_UNFINISHED_TURN] == 0


def test_earlier_unfinished_turns_are_cut_only_when_every_ai_turn_is_checked():
    last = "It then falls as rain, or as snow when the air below the cloud is cold enough."
    text = f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}\n{RAW_HUMAN} How?\n{RAW_AI} {CUT}\n{RAW_HUMAN} And?\n{RAW_AI} {last}"
    assert [len(t) for t in corpus.build_corpus(table(text), CONFIG).conversations["turns"]] == [6]
    every = CorpusConfig.model_validate({"unfinished_turns": {"turns": "every_ai"}})
    built = corpus.build_corpus(table(text), every)
    assert [t["text"] for t in built.conversations.iloc[0]["turns"]] == ["Why?", ANSWER]


def test_a_cut_off_turn_and_an_unfinished_one_before_it_are_both_trimmed():
    text = f"{RAW_HUMAN} Why?\n{RAW_AI} {ANSWER}\n{RAW_HUMAN} How?\n{RAW_AI} {CUT}\n{RAW_HUMAN} And"
    built = corpus.build_corpus(table(text, finish_reason="length"), CONFIG)
    assert [t["text"] for t in built.conversations.iloc[0]["turns"]] == ["Why?", ANSWER]
    assert built.counts[reasons.TRIMMED_CUT_OFF_TURN] == built.counts[reasons.TRIMMED_UNFINISHED_TURN] == 1


ROLE_VOICE_TRANSCRIPTS = {
    "assistant speaks as human": (f"{RAW_HUMAN} How can I help you today?\n{RAW_AI} {ANSWER}", reasons.ROLE_VOICE),
    "human asks in the AI turn": (
        f"{RAW_HUMAN} Tell me about rain.\n{RAW_AI} {ANSWER}\n{RAW_HUMAN} Why?\n{RAW_AI} What rain do you mean?",
        reasons.ROLE_VOICE,
    ),
    "developer recommends": (
        f"{RAW_HUMAN} As a developer I would recommend TypeScript. Is it worth it?\n{RAW_AI} {ANSWER}", "kept"
    ),
    "rhetorical question": (f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} Why? {ANSWER}", "kept"),
    "offer at the end": (f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} {ANSWER} Would you like an example?", "kept"),
    "quoting the AI": (f"{RAW_HUMAN} You said 'I hope this helps'. Why?\n{RAW_AI} {ANSWER}", "kept"),
}


@pytest.mark.parametrize("name", list(ROLE_VOICE_TRANSCRIPTS))
def test_role_voice_rejects_the_other_speakers_voice_and_keeps_look_alikes(name):
    text, expected = ROLE_VOICE_TRANSCRIPTS[name]
    built = corpus.build_corpus(table(text), CONFIG, "en")
    assert outcome(built) == {"id0": expected}
    assert built.reason_counts()[reasons.ROLE_VOICE] == (expected == reasons.ROLE_VOICE)
    off = corpus.build_corpus(table(text), CorpusConfig.model_validate({"role_voice": {"enabled": False}}), "en")
    assert outcome(off) == {"id0": "kept"}


def test_role_voice_detail_names_the_turn_and_its_cue():
    built = corpus.build_corpus(table(ROLE_VOICE_TRANSCRIPTS["assistant speaks as human"][0]), CONFIG)
    assert built.rejects.iloc[0]["detail"] == "turn 0: speaks in the assistant's voice: 'How can I help you'"
    asked = corpus.build_corpus(table(ROLE_VOICE_TRANSCRIPTS["human asks in the AI turn"][0]), CONFIG)
    assert asked.rejects.iloc[0]["detail"] == "turn 3: asks like the human: 1 of 1 sentences are questions"


def test_instruction_data_is_not_held_to_the_self_chat_voice():
    seeds = pd.DataFrame([{"seed_id": "q", "seed": "Write a question about rain.", "source": "alpaca", "shard": 0,
                           "response": "Why does rain fall?"}])  # fmt: skip
    assert corpus.single_turn_corpus(seeds, CONFIG).conversations["seed_id"].tolist() == ["q"]


def test_every_reason_and_trim_is_counted_even_at_zero():
    built = corpus.build_corpus(table(f"{RAW_HUMAN} Why does it rain?\n{RAW_AI} {ANSWER}"), CONFIG)
    assert built.reason_counts()[reasons.ROLE_VOICE] == 0 and built.reason_counts()[reasons.UNFINISHED_TURN] == 0
    assert set(built.adjustment_counts()) >= set(reasons.TRIMS)
    assert reasons.REASONS.index(reasons.UNFINISHED_TURN) == reasons.REASONS.index(reasons.MARKER_IN_TURN) + 1
    assert reasons.REASONS[-1] == reasons.ROLE_VOICE
