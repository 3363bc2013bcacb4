"""What the content filters look for, as RE2 patterns (Arrow's regex engine), matched case-insensitively.

The feedback judge reads ``REFUSAL_PATTERN`` too: a judge that refuses to score is
told by the same phrasing as a refusing teacher.
"""

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
# Personal data replaced in kept turns (``corpus.scrub``): kind -> (pattern, placeholder).
SCRUB_PATTERNS = {
    "emails": (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "<email>"),
    "urls": (r"\bhttps?://[^\s<>\"')\]]+|\bwww\.[^\s<>\"')\]]+", "<url>"),
    "phones": (r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}\b", "<phone>"),
}
