import pandas as pd

from baize_assets.core.collect.transcript import TRANSCRIPT_SCHEMA
from baize_assets.core.config.pipeline import CorpusConfig
from baize_assets.core.corpus import build as corpus, parse, reasons, schema
from baize_assets.core.prompts import BAIZE_SYSTEM_PROMPT, RAW_AI, RAW_HUMAN, Turn

CONFIG = CorpusConfig()


def transcripts(*texts, failure=None) -> pd.DataFrame:
    rows = [
        {"seed_id": f"id{i}", "seed": f"seed {i}", "source": "quora", "shard": 0, "transcript": text,
         "failure_kind": failure, "failure_message": "boom" if failure else None}
        for i, text in enumerate(texts)
    ]
    return pd.DataFrame(rows, columns=[f.name for f in TRANSCRIPT_SCHEMA])


def test_parser_keeps_the_last_exchange_and_drops_preamble_and_echoed_example():
    text = (
        "Sure! Here is the transcript:\n[Human] Hello!\n[AI] Hi! How can I help you?\n"
        "[Human] What is rain?\n[AI] Water falling from clouds.\n"
        "[Human] Why is it wet?\n[AI] Because it is water.\n[Human] "
    )
    parsed = parse.parse_transcript(text)
    assert parsed.reason is None
    assert parsed.turns == [
        Turn("human", "What is rain?"), Turn("ai", "Water falling from clouds."),
        Turn("human", "Why is it wet?"), Turn("ai", "Because it is water."),
    ]


def test_parser_tolerates_marker_variants_and_line_endings():
    parsed = parse.parse_transcript("[ human ]: Hi there?\r\n[AI]  Hello.\r[HUMAN] More?\n[ai] Yes.")
    assert [t.text for t in parsed.turns] == ["Hi there?", "Hello.", "More?", "Yes."]


def test_build_corpus_gives_every_transcript_exactly_one_outcome():
    table = transcripts(
        f"{RAW_HUMAN} What is tea?\n{RAW_AI} A drink made from leaves.",
        None,
        "no markers at all",
        f"{RAW_HUMAN} Q?\n{RAW_AI} As an AI language model, I cannot have opinions.",
        f"{RAW_HUMAN} Who made you?\n{RAW_AI} I was trained by OpenAI.",
        f"{RAW_HUMAN} Q?\n{RAW_HUMAN} Another?\n{RAW_AI} A.",
        f"{RAW_HUMAN} Q?\n{RAW_AI} Sure.\nHuman: and now I ask myself",
        f"{RAW_HUMAN} Q?\n{RAW_AI}   \n{RAW_HUMAN} More?\n{RAW_AI} A.",
        f"{RAW_AI} I start.\n{RAW_HUMAN} Odd.",
    )
    built = corpus.build_corpus(table, CONFIG)
    assert built.conversations["seed_id"].tolist() == ["id0"]
    assert built.conversations.iloc[0]["text"] == (
        f"{BAIZE_SYSTEM_PROMPT}\n[|Human|] What is tea?\n[|AI|] A drink made from leaves.\n[|Human|] "
    )
    by_seed = dict(zip(built.rejects["seed_id"], built.rejects["reason"]))
    assert by_seed == {
        "id1": reasons.EMPTY_TRANSCRIPT, "id2": reasons.NO_TURNS, "id3": reasons.AI_DISCLAIMER,
        "id4": reasons.OPENAI_MENTION, "id5": reasons.ROLE_CONFUSION, "id6": reasons.ROLE_CONFUSION,
        "id7": reasons.EMPTY_TURN, "id8": reasons.ROLE_CONFUSION,
    }
    assert set(built.rejects.columns) >= {"seed_id", "seed", "source", "reason", "detail"}
    assert built.reason_counts()[reasons.ROLE_CONFUSION] == 3


def test_teacher_failures_become_rejects_with_their_kind():
    built = corpus.build_corpus(transcripts(None, failure="rate_limited"), CONFIG)
    assert built.rejects.iloc[0]["reason"] == reasons.TEACHER_FAILURE
    assert built.rejects.iloc[0]["detail"].startswith("rate_limited")


def test_single_turn_corpus_filters_content():
    seeds = pd.DataFrame(
        [
            {"seed_id": "a", "seed": "Name a fruit.", "source": "alpaca", "shard": 1, "response": "Apple."},
            {"seed_id": "b", "seed": "Who are you?", "source": "alpaca", "shard": 1, "response": "I am ChatGPT."},
            {"seed_id": "c", "seed": "Say hi.", "source": "alpaca", "shard": 1, "response": "Hi!\n[|Human|] more"},
            {"seed_id": "d", "seed": "Go on [ai] now", "source": "alpaca", "shard": 1, "response": "Fine."},
        ]
    )
    built = corpus.single_turn_corpus(seeds, CONFIG)
    assert built.conversations["n_exchanges"].tolist() == [1]
    assert built.rejects["reason"].tolist() == [reasons.MARKER_IN_TURN, reasons.MARKER_IN_TURN, reasons.OPENAI_MENTION]
    assert built.conversations["seed_id"].tolist() == ["a"]
    assert built.rejects["detail"].tolist()[:2] == [
        "turn 1 (ai) contains '[|Human|] '", "turn 0 (human) contains '[ai] '"
    ]


def test_data_version_tracks_content():
    built = corpus.build_corpus(
        transcripts(f"{RAW_HUMAN} Q? Why?\n{RAW_AI} A. Yes.", f"{RAW_HUMAN} R? How?\n{RAW_AI} B. No."), CONFIG
    )
    version = schema.data_version(built.conversations)
    assert version == schema.data_version(built.conversations.iloc[::-1])
    assert version != schema.data_version(built.conversations.iloc[:1])
