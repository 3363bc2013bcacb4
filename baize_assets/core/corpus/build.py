"""From raw teacher transcripts to the training corpus: parse, filter, record why.

Every transcript ends either as a kept conversation (its turns and its Baize training
text) or as a reject with exactly one reason code. Nothing is dropped silently: the
reason of a reject is the first filter it fails, in the order of ``REASONS``, and the
parts of a kept transcript that were trimmed (text before the first marker, an echoed
prompt example, a trailing unanswered question, a turn cut off by the token limit, a
last AI turn that ends unfinished by its text alone) are counted. Filters are
configured by ``corpus:`` in ``baize.yaml`` (see ``CorpusConfig``).

The filters that look at words run over all turns of a shard at once (Arrow string
kernels, numpy over word hashes, lingua in parallel); the MinHash signature each kept
conversation needs for near-duplicate removal comes out of the same pass and is stored
with it, so the per-adapter dedup only compares signatures.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..config.corpus import UnfinishedTurnConfig
from ..config.pipeline import CorpusConfig
from ..prompts import MARKER_ANYWHERE, MARKER_PATTERN, Turn, render_conversation
from . import dedup, langid, role_voice
from .shingles import CHUNK_TEXTS, ngram_hashes, repeated_fraction, word_hashes
from .unfinished import unfinished_cause

# Bump when parsing or filtering changes what is kept: it is the conversations'
# code_version, so Dagster marks every corpus partition stale.
CORPUS_LOGIC_VERSION = "4"

# Reason codes of the rejects table, in the order the checks run.
TEACHER_FAILURE = "teacher_failure"
INVALID_ROW = "invalid_row"
CONTENT_FILTER = "content_filter"  # the provider's filter withheld (part of) the answer
EMPTY_TRANSCRIPT = "empty_transcript"
NO_TURNS = "no_parsable_turns"
TRUNCATED = "truncated"
EMPTY_TURN = "empty_turn"
ROLE_CONFUSION = "role_confusion"
MARKER_IN_TURN = "marker_in_turn"
UNFINISHED_TURN = "unfinished_turn"  # cut off by its text alone, with no complete exchange before it
TOO_FEW_EXCHANGES = "too_few_exchanges"
TURN_TOO_SHORT = "turn_too_short"
TURN_TOO_LONG = "turn_too_long"
REFUSAL = "refusal"
OPENAI_MENTION = "openai_mention"
REPETITION = "repetition"
WRONG_LANGUAGE = "wrong_language"
# A turn in the other speaker's voice (core/corpus/role_voice.py); after the language check,
# since it reads English phrasing.
ROLE_VOICE = "role_voice"
REASONS = (
    TEACHER_FAILURE, INVALID_ROW, CONTENT_FILTER, EMPTY_TRANSCRIPT, NO_TURNS, TRUNCATED, EMPTY_TURN,
    ROLE_CONFUSION, MARKER_IN_TURN, UNFINISHED_TURN, TOO_FEW_EXCHANGES, TURN_TOO_SHORT, TURN_TOO_LONG, REFUSAL,
    OPENAI_MENTION, REPETITION, WRONG_LANGUAGE, ROLE_VOICE,
)  # fmt: skip

# Counted edits of kept conversations (not rejections).
TRIMMED_PREAMBLE = "trimmed_preamble"
TRIMMED_ECHOED_EXAMPLE = "trimmed_echoed_example"
TRIMMED_UNANSWERED_QUESTION = "trimmed_unanswered_question"
TRIMMED_CUT_OFF_TURN = "trimmed_cut_off_turn"
TRIMMED_UNFINISHED_TURN = "trimmed_unfinished_turn"  # cut off by its text although finish_reason was stop
TRIMS = (
    TRIMMED_PREAMBLE, TRIMMED_ECHOED_EXAMPLE, TRIMMED_UNANSWERED_QUESTION, TRIMMED_CUT_OFF_TURN,
    TRIMMED_UNFINISHED_TURN,
)  # fmt: skip
SCRUBBED = {"emails": "scrubbed_emails", "phones": "scrubbed_phones", "urls": "scrubbed_urls"}

TURN_TYPE = pa.struct([("role", pa.string()), ("text", pa.string())])
CONVERSATION_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("turns", pa.list_(TURN_TYPE)),
        ("n_exchanges", pa.int32()),
        ("text", pa.string()),
        # MinHash signature of the turns' word shingles and the scheme that made it
        # (``dedup.signature_version``); the training set compares them.
        ("minhash", pa.list_(pa.uint32())),
        ("minhash_version", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("transcript", pa.string()),
    ]
)

# A marker at a line start, also with one bracket missing ("[Human Hi", "AI] Hello").
_MARKER_AT_LINE_START = re.compile(
    r"(?im)^[ \t]*(?:" + MARKER_PATTERN
    + r"|[\[［][ \t]*(?P<open_role>human|ai)\b[ \t]*:?|(?P<close_role>human|ai)[ \t]*[\]］][ \t]*:?)"
)  # fmt: skip
# Speaker labels ("Human: ...", "AI: ...") used as markers by a transcript that has no bracketed ones.
_LABEL_AT_LINE_START = re.compile(r"(?im)^[ \t]*(?P<role>human|ai)[ \t]*:")
# A speaker label written inside a turn ("Human: ...", "AI: ...") at a line start.
_INNER_SPEAKER = re.compile(r"(?im)^\s*(human|ai|assistant|user)\s*:")
# The one-exchange example that ends the self-chat prompt; teachers often echo it.
_EXAMPLE_EXCHANGE = (("human", "hello!"), ("ai", "hi! how can i help you?"))
# Characters that carry no text: byte-order mark, zero-width spaces and joiners, word joiner.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# RE2 patterns (Arrow's regex engine) for the content filters, matched case-insensitively.
REFUSAL_PATTERN = (
    r"as an ai language model|as a language model|as an ai(?: assistant)?,|i am an ai language model"
    r"|i'm (?:just )?an ai(?: language model)?\b|i(?:'m| am) sorry, but (?:i|as an ai)"
    r"|i (?:cannot|can't|am unable to|am not able to) (?:fulfill|comply|provide assistance|assist with|help with)"
    r"|i'm not able to (?:help|assist) with that|i do not have personal (?:opinions|beliefs|experiences)"
    r"|i don't have personal (?:opinions|beliefs|experiences)"
)
# OpenAI / ChatGPT / GPT-3/4 named as the speaker itself, not merely as a topic.
_GPT = r"(?:chat\s?gpt|gpt-?(?:3(?:\.5)?|4)(?:-?turbo)?)"
OPENAI_IDENTITY_PATTERN = (
    rf"\b(?:i am|i'm|i was|my name is|this is|as)\s+(?:an? |the )?(?:ai |language |large language )?(?:model )?"
    rf"(?:called |named )?{_GPT}\b"
    r"|\b(?:developed|created|trained|built|made|designed|programmed)\s+by\s+open\s?ai\b"
    r"|\bopen\s?ai'?s?\s+(?:language model|ai model|model|assistant|chatbot)\b"
    rf"|\b(?:based on|powered by|built on)\s+(?:the\s+)?(?:{_GPT}|open\s?ai)"
)
_SCRUB_PATTERNS = {
    "emails": (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "<email>"),
    "urls": (r"\bhttps?://[^\s<>\"')\]]+|\bwww\.[^\s<>\"')\]]+", "<url>"),
    "phones": (r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}\b", "<phone>"),
}


@dataclass(frozen=True)
class Parsed:
    turns: list[Turn]
    reason: str | None = None
    detail: str | None = None
    trimmed: tuple[str, ...] = ()


def clean_text(text: str) -> str:
    """NFC, one kind of line end, no invisible or control characters."""
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    return _CONTROL.sub("", text)


def _split(text: str) -> list[tuple[str, int, int]] | None:
    """(role, start of marker, end of marker) of every marker that starts a turn."""
    found = []
    for match in _MARKER_AT_LINE_START.finditer(text):
        role = match.group("role") or match.group("open_role") or match.group("close_role")
        found.append((role.lower(), match.start(), match.end()))
    if len(found) >= 2 or (found and not MARKER_ANYWHERE.search(text, found[0][2])):
        return found
    # One line holds the whole transcript: every bracketed marker starts a turn.
    found = [(m.group("role").lower(), m.start(), m.end()) for m in MARKER_ANYWHERE.finditer(text)]
    if found:
        return found
    labels = [(m.group("role").lower(), m.start(), m.end()) for m in _LABEL_AT_LINE_START.finditer(text)]
    return labels or None


def _before_unfinished(turns: list[Turn], config: UnfinishedTurnConfig) -> tuple[list[Turn], str | None]:
    """The exchanges before the first AI turn that ends unfinished, and why it looks cut off."""
    checked = range(len(turns)) if config.turns == "every_ai" else range(len(turns) - 1, len(turns))
    for index in checked:
        if turns[index].role == "ai" and (cause := unfinished_cause(turns[index].text, config)):
            kept = turns[:index]
            return (kept[:-1] if kept and kept[-1].role == "human" else kept), cause
    return turns, None


def parse_transcript(
    transcript: str | None,
    *,
    truncated: bool = False,
    check_roles: bool = True,
    keep_truncated: bool = True,
    unfinished: UnfinishedTurnConfig | None = None,
) -> Parsed:
    """Split a raw ``[Human]`` / ``[AI]`` transcript into alternating turns.

    Text before the first marker is dropped, an echoed prompt example is dropped, and
    (unlike Baize's parser) the last exchange is kept. A trailing human turn with no
    answer is dropped, since training needs complete exchanges. A transcript cut off by
    the token limit (``truncated``) loses its last, unfinished turn, or is rejected
    when ``keep_truncated`` is false; so does one whose AI turn the ``unfinished``
    check finds cut off (with its question). Every trim is named in ``Parsed.trimmed``.
    """
    if not isinstance(transcript, str) or not transcript.strip():
        return Parsed([], EMPTY_TRANSCRIPT, None if transcript is None else "blank transcript")
    if truncated and not keep_truncated:
        return Parsed([], TRUNCATED, "finish_reason=length")
    text = clean_text(transcript)
    markers = _split(text)
    if not markers:
        return Parsed([], NO_TURNS, "no [Human]/[AI] marker")
    trimmed: list[str] = [TRIMMED_PREAMBLE] if text[: markers[0][1]].strip() else []
    turns = [
        Turn(role, text[end : following[1] if following else len(text)].strip())
        for (role, _, end), following in zip(markers, markers[1:] + [None])
    ]
    if turns[0].role == "ai" and check_roles:
        return Parsed(turns, ROLE_CONFUSION, "transcript starts with an AI turn")
    if tuple((t.role, t.text.lower()) for t in turns[:2]) == _EXAMPLE_EXCHANGE:
        turns = turns[2:]
        trimmed.append(TRIMMED_ECHOED_EXAMPLE)
    if truncated and turns:
        turns = turns[:-1]
        trimmed.append(TRIMMED_CUT_OFF_TURN)
    if turns and turns[-1].role == "human":
        turns = turns[:-1]
        trimmed.append(TRIMMED_UNANSWERED_QUESTION)
    if not turns:
        return Parsed([], TRUNCATED if truncated else NO_TURNS, "no complete exchange")
    for index, turn in enumerate(turns):
        if not turn.text:
            return Parsed(turns, EMPTY_TURN, f"turn {index} ({turn.role}) is empty")
        expected = "human" if index % 2 == 0 else "ai"
        if turn.role != expected:
            return Parsed(turns, ROLE_CONFUSION, f"turn {index} is {turn.role}, expected {expected}")
        if check_roles and _INNER_SPEAKER.search(turn.text):
            return Parsed(turns, ROLE_CONFUSION, f"turn {index} ({turn.role}) speaks for another role")
        if match := MARKER_ANYWHERE.search(turn.text):
            return Parsed(turns, MARKER_IN_TURN, f"turn {index} ({turn.role}) contains '{match.group(0)}'")
    if unfinished is not None and unfinished.enabled:
        turns, cause = _before_unfinished(turns, unfinished)
        if cause and not keep_truncated:
            return Parsed([], UNFINISHED_TURN, f"an AI turn ends unfinished ({cause}); truncated: drop")
        if cause and not turns:
            return Parsed([], UNFINISHED_TURN, f"the AI turn ends unfinished ({cause}), no complete exchange before it")
        if cause:
            trimmed.append(TRIMMED_UNFINISHED_TURN)
    return Parsed(turns, trimmed=tuple(trimmed))


@dataclass
class Corpus:
    conversations: pd.DataFrame
    rejects: pd.DataFrame
    # Every reason code and trim/scrub counter, zeros included, so each filter shows a count.
    counts: dict[str, int] = field(default_factory=dict)

    def reason_counts(self) -> dict[str, int]:
        return {reason: self.counts.get(reason, 0) for reason in REASONS}

    def adjustment_counts(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if k not in REASONS}


@dataclass
class _Candidates:
    """Parsed conversations waiting for the content filters, and the rejects so far."""

    bases: list[dict] = field(default_factory=list)
    turns: list[list[Turn]] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def reject(self, base: dict, reason: str, detail: str | None, transcript: str | None) -> None:
        self.rejects.append({**base, "reason": reason, "detail": detail, "transcript": transcript})
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def _base(row: dict) -> tuple[dict, str | None]:
    """The identifying columns of a row, and what is wrong with them (None when nothing)."""
    base = {k: row.get(k) if isinstance(row.get(k), str) else None for k in ("seed_id", "seed", "source")}
    shard = row.get("shard")
    base["shard"] = (
        int(shard)
        if isinstance(shard, (int, np.integer)) or (isinstance(shard, float) and shard.is_integer())
        else None
    )
    missing = [k for k in ("seed_id", "source", "shard") if base[k] is None]
    return base, f"missing or invalid {', '.join(missing)}" if missing else None


def _first_failure(mask: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per conversation, the index (into the turn arrays) of its first failing turn, or -1."""
    first = np.full(n, -1, dtype=np.int64)
    failing = np.flatnonzero(mask)[::-1]  # reversed: the earliest turn is written last
    first[owner[failing]] = failing
    return first


def _sample(turns: list[Turn], chars_per_turn: int, max_chars: int) -> str:
    return " ".join(t.text[:chars_per_turn] for t in turns)[:max_chars]


def _filter(candidates: _Candidates, config: CorpusConfig, language: str | None, self_chat: bool) -> Corpus:
    n = len(candidates.turns)
    lengths = np.fromiter((len(t) for t in candidates.turns), dtype=np.int64, count=n)
    owner = np.repeat(np.arange(n), lengths)
    turn_index = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    texts = [t.text for turns in candidates.turns for t in turns]
    is_ai = np.fromiter((t.role == "ai" for turns in candidates.turns for t in turns), dtype=bool, count=len(owner))
    array = pa.array(texts, type=pa.large_string())
    chars = pc.utf8_length(array).to_numpy(zero_copy_only=False) if len(texts) else np.zeros(0, np.int64)

    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)

    def fail_convs(mask_convs: np.ndarray, code: str, details) -> None:
        for index in np.flatnonzero(mask_convs & (reason == None)):  # noqa: E711 (elementwise on objects)
            reason[index], detail[index] = code, details(index)

    def fail_turns(mask: np.ndarray, code: str, describe) -> None:
        first = _first_failure(mask, owner, n)
        fail_convs(first >= 0, code, lambda c: f"turn {turn_index[first[c]]}: {describe(first[c])}")

    n_exchanges = np.bincount(owner[is_ai], minlength=n)
    fail_convs(
        n_exchanges < config.min_exchanges, TOO_FEW_EXCHANGES,
        lambda c: f"{n_exchanges[c]} exchanges, need {config.min_exchanges}",
    )  # fmt: skip
    bounds = config.turn_length
    if bounds.min_chars is not None:
        fail_turns(chars < bounds.min_chars, TURN_TOO_SHORT, lambda t: f"{chars[t]} chars < {bounds.min_chars}")
    if bounds.max_chars is not None:
        fail_turns(chars > bounds.max_chars, TURN_TOO_LONG, lambda t: f"{chars[t]} chars > {bounds.max_chars}")
    for enabled, code, pattern, turns_mask in (
        (config.refusals, REFUSAL, REFUSAL_PATTERN, is_ai),
        (config.openai_mentions, OPENAI_MENTION, OPENAI_IDENTITY_PATTERN, is_ai),
    ):
        if enabled and len(texts):
            hit = pc.match_substring_regex(array, pattern, ignore_case=True).to_numpy(zero_copy_only=False)
            compiled = re.compile(pattern, re.IGNORECASE)
            fail_turns(hit & turns_mask, code, lambda t, rx=compiled: f"'{rx.search(texts[t]).group(0)}'")

    repetition = config.repetition
    words = np.zeros(len(texts), dtype=np.int64)
    repeated = np.zeros(len(texts))
    signatures = np.zeros((n, config.near_dedup.num_perm), dtype=np.uint32)
    # One pass over word shingles, a chunk of whole conversations at a time: repetition per
    # turn, and each conversation's MinHash over the shingles of all its turns.
    turn_starts = np.concatenate([[0], np.cumsum(lengths)])
    near = config.near_dedup
    for first_conv in range(0, n, CHUNK_TEXTS):
        last_conv = min(first_conv + CHUNK_TEXTS, n)
        lo, hi = turn_starts[first_conv], turn_starts[last_conv]
        chunk_words = word_hashes(texts[lo:hi])
        words[lo:hi] = chunk_words.counts()
        if repetition.enabled:
            repeated[lo:hi] = repeated_fraction(ngram_hashes(chunk_words, repetition.ngram))
        if near.enabled:
            shingles = ngram_hashes(chunk_words, near.shingle_words)
            conv_offsets = shingles.offsets[turn_starts[first_conv : last_conv + 1] - lo]
            signatures[first_conv:last_conv] = dedup.minhash_of_hashes(
                shingles.hashes, conv_offsets, near.num_perm, near.seed
            )
    if repetition.enabled:
        looping = (words >= repetition.min_words) & (repeated > repetition.max_repeated_ngram_fraction)
        fail_turns(
            looping, REPETITION,
            lambda t: f"{repeated[t]:.0%} of its {repetition.ngram}-grams repeat",
        )  # fmt: skip
        if repetition.repeated_turns and len(texts):
            said = pd.DataFrame({"owner": owner, "ai": is_ai, "text": pc.utf8_lower(pc.utf8_trim_whitespace(array))})
            fail_turns(
                said.duplicated().to_numpy(), REPETITION, lambda t: "repeats an earlier turn of the same speaker"
            )
    if language and config.language.enabled:
        pending = np.flatnonzero(reason == None)  # noqa: E711
        lang = config.language
        samples = [_sample(candidates.turns[i], lang.chars_per_turn, lang.max_sample_chars) for i in pending]
        confidence = langid.language_confidence(samples, language, lang.candidates, lang.english_word_share)
        low = np.zeros(n, dtype=bool)
        low[pending[confidence < lang.min_confidence]] = True
        scores = dict(zip(pending.tolist(), confidence.tolist()))
        fail_convs(low, WRONG_LANGUAGE, lambda c: f"'{language}' confidence {scores[c]:.2f} < {lang.min_confidence}")
    # Self-chat only: an instruction's answer may rightly be a question ("Write a question about ...").
    if self_chat and config.role_voice.enabled and len(texts):
        voiced = role_voice.voice_mismatch(array, is_ai, config.role_voice)
        fail_turns(voiced, ROLE_VOICE, lambda t: role_voice.describe(texts[t], bool(is_ai[t])))

    keep = reason == None  # noqa: E711
    kept_turn = keep[owner]
    kept_texts = array.filter(pa.array(kept_turn)) if len(texts) else array
    for kind, enabled in config.scrub.model_dump().items():
        if enabled and len(kept_texts):
            pattern, placeholder = _SCRUB_PATTERNS[kind]
            found = pc.count_substring_regex(kept_texts, pattern)
            candidates.count(SCRUBBED[kind], int(pc.sum(found).as_py() or 0))
            kept_texts = pc.replace_substring_regex(kept_texts, pattern, placeholder)
    kept_text_list = kept_texts.to_pylist()
    roles = [t.role for turns in candidates.turns for t in turns]
    kept_roles = [r for r, k in zip(roles, kept_turn) if k]

    rows: list[dict] = []
    position = 0
    version = dedup.signature_version(config.near_dedup)
    for index in np.flatnonzero(keep):
        count = int(lengths[index])
        turns = [
            Turn(r, t)
            for r, t in zip(kept_roles[position : position + count], kept_text_list[position : position + count])
        ]
        position += count
        rows.append(
            {
                **candidates.bases[index],
                "turns": [t.as_dict() for t in turns],
                "n_exchanges": int(n_exchanges[index]),
                "text": render_conversation(turns),
                "minhash": signatures[index] if near.enabled else None,
                "minhash_version": version if near.enabled else None,
            }
        )
    for index in np.flatnonzero(~keep):
        candidates.reject(candidates.bases[index], reason[index], detail[index], candidates.bases[index]["_raw"])
    for row in rows:
        del row["_raw"]
    rejects = [{k: v for k, v in r.items() if k != "_raw"} for r in candidates.rejects]
    return Corpus(
        pa.Table.from_pylist(rows, schema=CONVERSATION_SCHEMA).to_pandas(),
        pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA).to_pandas(),
        {**dict.fromkeys(REASONS + TRIMS, 0), **candidates.counts},
    )


def build_corpus(transcripts: pd.DataFrame, config: CorpusConfig, language: str | None = None) -> Corpus:
    """Parse and filter a transcripts table (see ``transcript_format.TRANSCRIPT_SCHEMA``)."""
    candidates = _Candidates()
    columns = {c: transcripts[c].tolist() if c in transcripts else [None] * len(transcripts) for c in (
        "seed_id", "seed", "source", "shard", "transcript", "finish_reason", "failure_kind", "failure_message"
    )}  # fmt: skip
    for position in range(len(transcripts)):
        row = {c: values[position] for c, values in columns.items()}
        base, invalid = _base(row)
        transcript = row["transcript"] if isinstance(row["transcript"], str) else None
        if isinstance(row["failure_kind"], str):
            candidates.reject(
                base, TEACHER_FAILURE, f"{row['failure_kind']}: {row['failure_message'] or ''}", transcript
            )
            continue
        if invalid:
            candidates.reject(base, INVALID_ROW, invalid, transcript)
            continue
        if row["finish_reason"] == CONTENT_FILTER:
            candidates.reject(base, CONTENT_FILTER, "finish_reason=content_filter", transcript)
            continue
        parsed = parse_transcript(
            transcript,
            truncated=row["finish_reason"] == "length",
            check_roles=config.role_confusion,
            keep_truncated=config.truncated == "keep_complete",
            unfinished=config.unfinished_turns,
        )
        if parsed.reason is not None:
            candidates.reject(base, parsed.reason, parsed.detail, transcript)
            continue
        for trim in parsed.trimmed:
            candidates.count(trim)
        candidates.bases.append({**base, "_raw": transcript})
        candidates.turns.append(parsed.turns)
    return _filter(candidates, config, language, self_chat=True)


def single_turn_corpus(seeds: pd.DataFrame, config: CorpusConfig, language: str | None = None) -> Corpus:
    """Instruction/response seeds (Alpaca) as one-exchange conversations, through the same filters."""
    candidates = _Candidates()
    for row in seeds.to_dict("records"):
        base, invalid = _base(row)
        seed, response = row.get("seed"), row.get("response")
        if invalid:
            candidates.reject(base, INVALID_ROW, invalid, None)
        elif not isinstance(seed, str) or not isinstance(response, str) or not seed.strip() or not response.strip():
            candidates.reject(base, EMPTY_TURN, "empty instruction or response", None)
        else:
            turns = [Turn("human", clean_text(seed).strip()), Turn("ai", clean_text(response).strip())]
            # The seed table quarantines these already; a table written by other means must not slip one through.
            marked = next(((i, t, m) for i, t in enumerate(turns) if (m := MARKER_ANYWHERE.search(t.text))), None)
            if marked:
                index, turn, match = marked
                candidates.reject(base, MARKER_IN_TURN, f"turn {index} ({turn.role}) contains '{match.group(0)}'", None)
                continue
            candidates.bases.append({**base, "_raw": None})
            candidates.turns.append(turns)
    return _filter(candidates, config, language, self_chat=False)


def turns_of(conversations: pd.DataFrame) -> list[list[Turn]]:
    """The turns column of a conversations table as :class:`Turn` lists."""
    return [[Turn(t["role"], t["text"]) for t in turns] for turns in conversations["turns"]]


def data_version(conversations: pd.DataFrame) -> str:
    """Fingerprint of a training set: changes when any kept conversation changes."""
    digest = hashlib.sha256()
    for seed_id, text in sorted(zip(conversations["seed_id"], conversations["text"])):
        digest.update(f"{seed_id}\0{text}\0".encode())
    return digest.hexdigest()[:16]


def schema_problems(table: pa.Table) -> list[str]:
    """What keeps a written conversations table from being training input: schema, empty turns."""
    present = {f.name: f.type for f in table.schema}
    problems = [
        f"column '{f.name}' is {present[f.name]}, expected {f.type}" if f.name in present else f"no column '{f.name}'"
        for f in CONVERSATION_SCHEMA
        if not present.get(f.name, pa.null()).equals(f.type)
    ]
    if problems:
        return problems
    for row, (seed_id, turns, text) in enumerate(
        zip(table["seed_id"].to_pylist(), table["turns"].to_pylist(), table["text"].to_pylist())
    ):
        where = f"row {row} (seed_id {seed_id})"
        if not turns or len(turns) % 2:
            problems.append(f"{where}: {len(turns or [])} turns, expected complete exchanges")
        elif any(not (t["text"] or "").strip() for t in turns):
            problems.append(f"{where}: empty turn")
        elif [t["role"] for t in turns] != ["human", "ai"] * (len(turns) // 2):
            problems.append(f"{where}: roles do not alternate human/ai")
        elif not text:
            problems.append(f"{where}: empty training text")
        if len(problems) >= 20:
            break
    return problems
