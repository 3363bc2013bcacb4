"""The filter classes fixed on real assistant text, each with clean and defective cases.

The cases are written here, paraphrasing patterns read in the hand-labelled real
conversations (core/corpus/real_text.py): no text of those conversations is copied.
"""

import pandas as pd
import pytest

from baize_assets.core.collect.transcript import TRANSCRIPT_SCHEMA
from baize_assets.core.config.corpus import CorpusConfig
from baize_assets.core.corpus import build as corpus, reasons
from baize_assets.core.prompts import RAW_AI, RAW_HUMAN

CONFIG = CorpusConfig()
ANSWER = "Rain forms when water vapour condenses into droplets that grow heavy enough to fall from the clouds."
TRIMMED = "trimmed"


def transcript(*turns: str) -> str:
    return "\n".join(f"{(RAW_HUMAN, RAW_AI)[i % 2]} {turn}" for i, turn in enumerate(turns))


def outcome_of(text: str, config: CorpusConfig = CONFIG) -> str:
    """kept, trimmed (an unfinished last answer cut off) or the reject's reason."""
    frame = pd.DataFrame(
        [{"seed_id": "s", "seed": "seed", "source": "quora", "shard": 0, "transcript": text, "finish_reason": "stop"}],
        columns=[f.name for f in TRANSCRIPT_SCHEMA],
    )
    built = corpus.build_corpus(frame, config, "en")
    if len(built.rejects):
        return built.rejects.iloc[0]["reason"]
    return TRIMMED if built.counts[reasons.TRIMMED_UNFINISHED_TURN] else "kept"


CASES = {
    # A refusal declines the task; an apology for a mistake is no refusal.
    "declines to write the program": (
        transcript("Write the whole inventory app for me.", "I'm sorry, but I can't put together a complete "
                   "application here. I can outline the main modules if that helps."), reasons.REFUSAL),
    "cannot make a file of the chat": (
        transcript("Save our chat as a PDF please.", "Unfortunately, I am not able to create a PDF of our "
                   "conversation. Your browser's print dialog can save the page as a PDF."), reasons.REFUSAL),
    "apologises for a wrong total": (
        transcript("That sum looks off.", "I apologize for the mistake, you are right. Adding the three rows "
                   "again gives 42, not 44, so the monthly total is 42 dollars."), "kept"),
    "apologises and goes on": (
        transcript("Your loop skips the first item.", "I'm sorry, I made an error in the range. Starting the "
                   "loop at zero instead of one visits every element of the list."), "kept"),
    "a character apologises in a script": (
        transcript("Write a short scene at a police station.", "DETECTIVE: I'm sorry, but I can't let you leave "
                   "town tonight.\nMAYA: Then tell me what you found in the car.\nDETECTIVE: Sit down first."),
        "kept"),
    "a customer's line in quotes": (
        transcript("Give me a polite way to cancel.", 'You could say: "I\'m sorry, but I can\'t make it on '
                   'Friday, could we move the booking?" It is short and keeps the door open.'), "kept"),
    # The AI speaking of itself: its cutoff, its nature, what it cannot reach.
    "knowledge cutoff": (
        transcript("Does the library support async yet?", "As of my last knowledge update in 2021, the library "
                   "had no async interface, though a proposal for one was being discussed."), reasons.AI_DISCLAIMER),
    "training data end": (
        transcript("What changed in the site's layout?", "The page structure may have changed since my training "
                   "data, which only goes up to late 2021, so the selectors might need an update."),
        reasons.AI_DISCLAIMER),
    "a program that cannot see": (
        transcript("What are these tiles made of?", "I'm just a text-based program, so I have no way to look at "
                   "your photo, but glazed tiles like the ones you describe are usually ceramic."),
        reasons.AI_DISCLAIMER),
    "cannot browse but answers": (
        transcript("Summarise this company's homepage.", "I cannot browse websites, so here is what is generally "
                   "known about firms of that kind and what such a page usually covers."), reasons.AI_DISCLAIMER),
    "a dated fact": (
        transcript("How popular is lacrosse in schools?", "It keeps growing. As of 2021, about 2,500 high schools "
                   "in the United States offered the sport to their students."), "kept"),
    "a person who researches AI": (
        transcript("Any reading for me?", "As an AI researcher, you may enjoy the survey on evaluation methods; "
                   "its second chapter compares human and automatic judgements."), "kept"),
    # Repetition on prose: code, tables, lists, verse and repeated requests are not loops.
    "tables of the same columns": (
        transcript("Put the rates in a table.", "| City | Rent | Transport |\n|---|---|---|\n| Lisbon | high | "
                   "low |\n| Porto | medium | low |\n| Braga | low | low |\n| Faro | medium | low |\n| Evora | low "
                   "| low |\n| Aveiro | low | low |\n\nRent varies most; transport costs are similar everywhere."),
        "kept"),
    "code that repeats its keywords": (
        transcript("Create the tables.", "Here are the tables:\n\n```sql\nCREATE TABLE users (id INT PRIMARY KEY, "
                   "name TEXT NOT NULL);\nCREATE TABLE orders (id INT PRIMARY KEY, user_id INT NOT NULL);\nCREATE "
                   "TABLE items (id INT PRIMARY KEY, order_id INT NOT NULL);\nCREATE TABLE tags (id INT PRIMARY KEY, "
                   "item_id INT NOT NULL);\n```\n\nEach table has a numeric primary key."), "kept"),
    "a song with a chorus": (
        transcript("Write a short song about rain.", "Verse:\nGrey clouds gather over town,\nwe watch the first "
                   "drops coming down\n\nChorus:\nLet it rain, let it pour,\nwe will dance outside the door\n\nVerse:"
                   "\nPuddles shine on every street,\ncold and bright beneath our feet\n\nChorus:\nLet it rain, let "
                   "it pour,\nwe will dance outside the door"), "kept"),
    "the user asks to continue twice": (
        transcript("List ideas for a garden.", "1. A herb corner near the kitchen door.", "continue",
                   "2. A small pond for frogs and dragonflies.", "continue", "3. A bench under the old apple tree."),
        "kept"),
    "a looping answer": (
        transcript("Tell me about rain.", " ".join(["Rain falls from the clouds every day."] * 8)),
        reasons.REPETITION),
    "the same answer twice": (transcript("Why?", ANSWER, "And again, why?", ANSWER), reasons.REPETITION),
    # Role voice: the assistant's own questions, questions asked for as content, scripts, role-play.
    "clarifying question": (
        transcript("I need some JavaScript written.", "Sure, I can help with that. Could you share what the "
                   "function should return and where it will run?"), "kept"),
    "interview questions the user asked for": (
        transcript("Give me some questions for a developer interview.", "Here are some questions:\n\n1. Can you "
                   "tell me about a project you are proud of?\n2. How do you review a colleague's code?\n3. What would "
                   "you change in your last team's process?"), "kept"),
    "a riddle the user asked for": (
        transcript("Tell me a sports riddle.", "Happy to! Here it is:\n\nWhat has a net but never catches fish?"),
        "kept"),
    "role-play the user asked for": (
        transcript("Act as an interviewer for a nursing job and ask me one question at a time.",
                   "Thank you for coming in today. Can you tell me about your last placement?",
                   "I worked two years on a surgical ward.", "What did you find hardest about it?"), "kept"),
    "characters ask each other": (
        transcript("Write a dialogue between two hikers.", "ANNA: Can you see the hut from here?\nBEN: Not yet. "
                   "What time did the ranger say it closes?\nANNA: Six, I think."), "kept"),
    "the AI asks like the user": (
        transcript("Tell me about rain.", ANSWER, "Why?", "Which cities do you like to visit in the rain?"),
        reasons.ROLE_VOICE),
    # Final answers cut mid-code, mid-list or mid-quote although the endpoint said stop.
    "code cut inside a closed block": (
        transcript("Build the user object.", "Here it is:\n\n```js\nconst user = {\n  name: 'Ana',\n  email:\n```"),
        reasons.UNFINISHED_TURN),
    "a call left open before the fence": (
        transcript("Make the buffer.", "```swift\nlet buffer = device.makeBuffer(bytes: &values, length: 16\n```"),
        reasons.UNFINISHED_TURN),
    "an option list stops inside a quote": (
        transcript("Name the tariffs.", "1. \"Basic S\"\n2. \"Basic M\"\n3. \"Plus L with the large"),
        reasons.UNFINISHED_TURN),
    "the last item lacks its siblings' full stop": (
        transcript("Risks of scaling rentals?", "Some risks:\n\n1. Cleaning gets harder to schedule.\n2. Guests "
                   "expect faster replies.\n3. Maintenance costs grow with every property and"),
        reasons.UNFINISHED_TURN),
    "an explanation after code stops": (
        transcript("Parse the sensor output.", "```python\nname = match.group(1)\nprint(name)\n```\n\nThis code "
                   "reads each line of the scanner output, applies the pattern above and then stores the values "
                   "that it finds for the device in"), reasons.UNFINISHED_TURN),
    "a post ending in hashtags": (
        transcript("Write a short post.", "Worried about shared files? Track who sees what, in one place, and "
                   "keep your data safe.\n\n#DataSafety #FileSharing #Workspace"), "kept"),
    "a script ending in capitals": (
        transcript("Finish the story.", "They walked out together, laughing about the strange day they had "
                   "shared and the long road ahead.\n\nTHE END"), "kept"),
    "a signature after a blank line": (
        transcript("Write the newsletter.", "Thanks for being part of this community and for every message you "
                   "sent us this year.\n\nBest regards,\n\nThe Harbour Street Band"), "kept"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_each_real_text_pattern_is_kept_or_caught_under_its_reason(name):
    text, expected = CASES[name]
    assert outcome_of(text) == expected


def test_a_cut_final_answer_is_trimmed_with_its_question_when_earlier_exchanges_are_complete():
    text = transcript("Why does it rain?", ANSWER, "Show the code.", "```js\nconst rain = {\n  drops: [\n```")
    assert outcome_of(text) == TRIMMED


def test_disclaimers_and_refusals_each_have_their_switch():
    cutoff = CASES["knowledge cutoff"][0]
    assert outcome_of(cutoff, CorpusConfig.model_validate({"ai_disclaimers": False})) == "kept"
    declined = CASES["declines to write the program"][0]
    assert outcome_of(declined, CorpusConfig.model_validate({"refusals": False})) == "kept"


def test_role_play_waives_the_voice_check_only_after_it_is_asked_for():
    asked_late = transcript(
        "Tell me about rain.", "Which cities do you like to visit in the rain?", "Now act as my travel agent.", ANSWER
    )
    assert outcome_of(asked_late) == reasons.ROLE_VOICE
