"""Why a transcript was rejected, and how a kept one was edited: the corpus's counted codes.

A reject carries exactly one reason code: the first check it fails, in the order of
``REASONS`` (parsing first, then the content filters). The trims and scrubs of kept
conversations are counted beside them, so every filter shows a count in the report.
"""

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
# The AI speaking of itself: its knowledge cutoff, being a language model, what it cannot access.
AI_DISCLAIMER = "ai_disclaimer"
OPENAI_MENTION = "openai_mention"
REPETITION = "repetition"
WRONG_LANGUAGE = "wrong_language"
# A turn in the other speaker's voice (core/corpus/role_voice.py); after the language check,
# since it reads English phrasing.
ROLE_VOICE = "role_voice"
REASONS = (
    TEACHER_FAILURE, INVALID_ROW, CONTENT_FILTER, EMPTY_TRANSCRIPT, NO_TURNS, TRUNCATED, EMPTY_TURN,
    ROLE_CONFUSION, MARKER_IN_TURN, UNFINISHED_TURN, TOO_FEW_EXCHANGES, TURN_TOO_SHORT, TURN_TOO_LONG, REFUSAL,
    AI_DISCLAIMER, OPENAI_MENTION, REPETITION, WRONG_LANGUAGE, ROLE_VOICE,
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
