"""What the content filters look for, as RE2 patterns (Arrow's regex engine) that Python ``re`` reads alike.

The refusal, disclaimer and OpenAI patterns are matched case-insensitively on an AI
turn's own words (``role_voice.own_words``): quotes, block quotes and a script's lines are
taken out first, so a character who apologises in a screenplay is no refusal. They were
tuned on the hand-labelled real conversations of ``real_text.py``, where a refusal is a
turn that declines the task, not one that apologises ("I'm sorry, I made a mistake").
The feedback judge reads ``REFUSAL_PATTERN`` too: a judge that refuses to score is told
by the same phrasing as a refusing teacher.
"""

# Words that are not the speaker's own: double-quoted spans, single-quoted ones that open
# after a space, bracket or colon, and Markdown block quotes.
OTHER_VOICES = r"\"[^\"\n]*\"|“[^”\n]*”|(?:^|[\s(:])'[^'\n]*'|(?m:^[ \t]*>[^\n]*)"
# A script's speaker cue: "Anna: ...", "JOE (quietly): ..." or a screenplay's name on its own
# line ("ROGER"). A turn with two or more is a script, whose lines are its characters' words:
# SCRIPT_LINES are the labelled lines and the dialogue under a name line, up to a blank line.
_LABEL = r"[ \t*_]*[A-Z][\w'.-]*(?: [A-Z][\w'.-]*){0,2}[ \t]*(?:\([^)\n]*\))?[ \t]*:"
_NAME_LINE = r"[ \t]*[A-Z][A-Z'.-]+(?: [A-Z][A-Z'.-]+)?[ \t]*"
SCRIPT_CUE = rf"(?m:^(?:{_LABEL}|{_NAME_LINE}$))"
SCRIPT_LINES = rf"(?m:^{_LABEL}[^\n]*$)|(?m:^{_NAME_LINE}\n(?:[^\n]+\n?)*)"
# The speaker calling itself an AI ("as an AI language model,", "I'm just a chatbot, so");
# the word after the noun is checked so that "as an AI researcher" is a person.
_AI = (
    r"(?:(?:ai|artificial intelligence)(?: language model| model| assistant| chatbot)?"
    r"|(?:large |text-based |computer |natural )?language model(?: ai)?|(?:text-based|computer) (?:ai|model|program)"
    r"(?: model)?|machine learning model|chatbot|virtual assistant|digital assistant)"
)
_AFTER_AI = (
    r"(?:[,.!;:)]|\s+(?:and|so|but|that|i|designed|created|trained|developed|programmed|here|without|with|which"
    r"|who|my|it|like)\b)"
)
AI_SELF = (
    rf"\b(?:as|since|because|being) (?:i am |i'm )?an? {_AI}{_AFTER_AI}"
    rf"|\bi(?:'m| am) (?:just |only |merely |simply )?(?:an? |your )?{_AI}{_AFTER_AI}"
)
# A turn that declines the task: "I can't provide the full code", "I'm sorry, but I am unable to ...".
# What it cannot reach ("I cannot browse") is a disclaimer, unless it declines for it.
_DECLINED = (
    r"(?:provide|write|create|generate|produce|give you|draw|display|show you|execute|fulfill|comply|assist with"
    r"|help with|help you with)"
)
# What is declined: "provide you with all the code", "create a PDF", "write that".
_WHAT = r"(?: you)?(?: with)? (?:a|an|the|that|this|it|any|all|you|your|such|these|those|complete|specific|actual)\b"
_CANNOT = r"(?:can(?:no|')t|can not|am (?:not (?:currently )?able|unable)|'m (?:not able|unable)|won't|will not)"
REFUSAL_PATTERN = (
    rf"\b(?:i(?:'m| am) sorry|i apologi[sz]e|unfortunately),? (?:but )?i ?(?:{_CANNOT}|(?:do not|don't) have the)\b"
    rf"|\b(?:i|we) ?{_CANNOT}(?: to)? {_DECLINED}{_WHAT}|\bit(?:'s| is) not possible for me to {_DECLINED}{_WHAT}"
    r"|\bi (?:do not|don't) have the (?:ability|capability) to\b"
    r"|\b(?:i(?:'m| am) sorry|i apologi[sz]e),? but [^.!?\n]{0,80}\b(?:is|are|would be) (?:beyond (?:the scope|my)"
    r"|not possible|impossible)"
)
# The AI speaking of itself without declining: its nature, its knowledge cutoff, what it
# cannot see or reach ("as of my knowledge cutoff in 2021", "I cannot browse the internet").
AI_DISCLAIMER_PATTERN = (
    AI_SELF + r"|\bknowledge cut-?\s?off|\bas of my (?:last )?(?:knowledge|training|update)"
    r"|\btraining data[^.\n]{0,20}(?:goes|extends|is|was) (?:only )?(?:up )?(?:to|until)"
    r"|\bi (?:do not|don't) have (?:any )?(?:access to |the ability to )?(?:the )?(?:browse|browsing|internet|real-time"
    r"|current|external|this information|that information|such information|personal (?:opinions|beliefs|experiences"
    r"|feelings|preferences)|emotions|feelings)"
    rf"|\bi ?{_CANNOT}(?: to)? (?:browse|search the (?:web|internet)|access (?:or \w+ )?(?:the internet|any |external"
    r"|websites?|the web|real-time|urls?|links?|files?))"
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
# What a turn's repetition is not measured on: code blocks (closed or not), indented code
# lines and table rows, whose repeated keywords and cells are their form, not a loop.
STRUCTURED_TEXT = r"(?s:(?:```|~~~).*?(?:```|~~~|$))|(?m:^(?: {4}|\t)[^\n]*$)|(?m:^[^\n]*\|[^\n]*\|[^\n]*$)"
# Personal data replaced in kept turns (``corpus.scrub``): kind -> (pattern, placeholder).
SCRUB_PATTERNS = {
    "emails": (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "<email>"),
    "urls": (r"\bhttps?://[^\s<>\"')\]]+|\bwww\.[^\s<>\"')\]]+", "<url>"),
    "phones": (r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\b\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}\b", "<phone>"),
}
