"""Labelled turns for the two text-only checks: defects and the clean look-alikes they must keep.

``UNFINISHED_CASES`` are final AI turns, cut (``True``) or finished (``False``);
``ROLE_VOICE_CASES`` are turns with their speaker, in the other speaker's voice
(``True``) or in their own (``False``). The clean cases are the hard ones: code
answers, lists, tables, URLs, quotes of what an AI said, people giving advice as
themselves, rhetorical questions and offers. A few defects are undetectable by design
(a turn cut right after a full stop, a human who advises without a single cue) and are
kept so the measured recall stays honest. ``filter_quality`` scores the checks here.
"""

from __future__ import annotations

UNFINISHED_CASES: tuple[tuple[str, bool], ...] = (
    # Cut off.
    ("Rain forms when water vapour condenses into tiny droplets. When those droplets merge and grow heavy "
     "enough, they", True),
    ("There are three main reasons. First, the soil drains poorly. Second, the roots need more light than the", True),
    ("You can reverse a list without changing it by slicing:\n\n```python\nnums = [1, 2, 3]\nbackwards = nums[::-1]\n",
     True),
    ("Here are the steps:\n\n1. Preheat the oven to 200°C.\n2. Season the chicken with salt and pepper.\n3.", True),
    ("The most common symptoms include wheezing, shortness of breath, chest tightness and", True),
    ("To get cheap flights, book early, stay flexible with your dates, and compare prices on several sites (for "
     "example", True),
    ("Asthma is a chronic condition of the airways. It makes them swell and narrow, which makes breathing", True),
    ("Git branching lets each person work on their own copy of the code. A simple workflow for a small team is:",
     True),
    ("Group the rows by the lower-cased address instead, with `LOWER(email)", True),
    ("In Japan trains are punctual and clean. A rail pass saves money if you travel between cities, but for short "
     "trips within Tokyo a prepaid IC card is usually", True),
    ("Switching from teaching to software development is very doable. Start by learning one language well, such as "
     "Python, and build small projects that", True),
    ("Here is a comparison:\n\n| Feature | Cats | Dogs |\n|---|---|---|\n| Exercise | Low | High |\n| Cost | Moderate",
     True),
    ("Sure. The main verb of that sentence is \"went\", and its subject is", True),
    ("Weather describes short-term conditions, while climate describes the average over a period of thirty years or",
     True),
    ("Vaccines show the immune system a harmless piece of the pathogen; the body then makes antibodies and memory "
     "cells, so that", True),
    ("Things to pack for a rainy week:\n- Comfortable waterproof shoes\n- A light rain jacket\n-", True),
    ("Install it with pip:\n\n```bash\npip install requests\n```\n\nThen import it and call `requests.get(", True),
    ("Photosynthesis happens in the chloroplasts, where chlorophyll captures light and uses it to split water into "
     "hydrogen and oxygen; the hydrogen is then combined with carbon dioxide to", True),
    ("A budget shows you where your money goes. Even a simple spreadsheet of income, fixed costs and variable costs "
     "can reveal sp", True),
    ("1. Drink plenty of water.\n2. Rest as much as you can.\n3. Take paracetamol for a fever, but never more than",
     True),
    ("The formula is (F − 32) × 5/9, so for 72°F you compute (72 − 32", True),
    ("Here's a minimal Flask app:\n\n~~~python\nfrom flask import Flask\napp = Flask(__name__)\n", True),
    ("Cats are more independent and need less space, whereas dogs generally need daily walks, training and", True),
    ("There isn't a single right answer, because it depends on your budget, your timeline, and", True),
    ("To see the ids too, group by LOWER(email) with HAVING COUNT(*) > 1 and join the result back to the users "
     "table on", True),
    ("The moon makes no light of its own. What we see is reflected sunlight, and as it orbits the Earth the part "
     "we see", True),
    ("Insulin resistance means your cells respond poorly to insulin, so the pancreas makes more of it to compensate. "
     "Over time, however", True),
    ("Consider the following points before you choose: cost, availability, and the", True),
    ("Here is the query:\n\n```sql\nSELECT id, LOWER(email) AS address\nFROM users\nWHERE LOWER(email) IN (\n", True),
    ("To keep a tidy workspace:\n\n* Clear the desk every evening.\n* Give each item a fixed home.\n*", True),
    ("Tea is made from the leaves of Camellia sinensis; green, black and oolong tea differ mainly in how long the "
     "leaves are oxidised before they are", True),
    ("You can set the variable in your shell profile,", True),
    # Cut right after a full stop: undetectable from the text.
    ("There are four steps to follow. First, unplug the router and wait thirty seconds.", True),
    ("Here are the three main causes of asthma:\n\n1. Genetics, since it often runs in families.", True),
    # Finished.
    ("Rain forms when water vapour condenses into droplets that grow heavy enough to fall from the clouds.", False),
    ("Use slicing to get a reversed copy:\n\n```python\nnums = [1, 2, 3, 4]\nbackwards = nums[::-1]\n"
     "print(nums, backwards)\n```", False),
    ("```python\nprint(sorted(nums, reverse=True))\n```\n\nThat gives you a new list and leaves nums alone", False),
    ("A few sites worth checking:\n\n- Skyscanner for comparing fares\n- Google Flights for price alerts\n"
     "- Budget airlines such as Ryanair or Wizz Air", False),
    ("1. Roll your clothes instead of folding them\n2. Pack a universal adapter\n3. Bring a small quick-dry towel",
     False),
    ("Most travellers find a rail pass worth it for two or more long trips. Would you like a sample itinerary?",
     False),
    ("Remember to breathe, read each question carefully and trust what you know. Good luck with the exam!", False),
    ("Japan is very safe and the food is wonderful, so you are in for a treat. Enjoy your trip 😊", False),
    ("Pro Git is free online and its first three chapters cover everything a small team needs: "
     "https://git-scm.com/book/en/v2", False),
    ('When I asked a teacher who had switched careers, she replied, "It was the best decision I ever made."', False),
    ("To convert, subtract 32 and multiply by five ninths: (72 − 32) × 5/9 (about 22.2°C)", False),
    ("To undo the last commit but keep its changes in your working tree, run `git reset --soft HEAD~1`", False),
    ("| Pet | Exercise | Space |\n|---|---|---|\n| Cat | Low | Little |\n| Dog | High | More |", False),
    ("Ottawa", False),
    ("Yes, exactly", False),
    ("Notebooks cost 4 × 2.35 = 9.40 and the pens 3 × 1.20 = 3.60, so the total comes to 13.00", False),
    ("Here is the query:\n\n```sql\nSELECT LOWER(email) AS address, COUNT(*)\nFROM users\nGROUP BY LOWER(email)\n"
     "HAVING COUNT(*) > 1;\n```\n\nIt lists every address used more than once, whatever its case.", False),
    ("Here's an example:\n\n```js\nconst doubled = values.map((v) => v * 2);\n```", False),
    ("The function (defined in utils.py) returns a list such as [1, 2, 3].", False),
    ("**Summary:** rest, fluids and paracetamol usually help within a few days.", False),
    ("I'm sorry you're going through this. Most colds clear up within a week, and rest really does help.", False),
    ("You can pack clothes, toiletries, chargers, documents, etc.", False),
    ("Hope this helps, and let me know how the migration goes :)", False),
    ("Run this to see every file, hidden ones included:\n\n```\nls -la\n```", False),
    ("Here's a short draft:\n\nDear Ms. Lee,\n\nThank you for the interview today. I enjoyed meeting the team and "
     "learning about the role.\n\nBest regards,\nSam", False),
    ("Popular choices for beginners are Python, JavaScript and Go (each has a friendly community).", False),
    ("The main verb is \"went\".", False),
    ("And that is really all there is to it…", False),
    ("Sorted in ascending order, the numbers are 3, 7, 19, 42, 56, 88", False),
    ("A simple workflow: create a branch per feature, open a pull request, review it together, then merge into main.",
     False),
    ("Cold rain on red leaves,\nthe gutter hums a low song —\nsummer washes out", False),
)  # fmt: skip

ROLE_VOICE_CASES: tuple[tuple[str, str, bool], ...] = (
    # Human turns in the assistant's voice.
    ("human", "How can I help you today?", True),
    ("human", "As an AI language model, I think the best approach is to start with the basics.", True),
    ("human", "I hope this helps! Let me know if you have any other questions.", True),
    ("human", "Sure! Here are some tips for packing light: roll your clothes, bring versatile shoes, and make sure "
              "to leave space for souvenirs.", True),
    ("human", "You're welcome! Enjoy your trip to Japan.", True),
    ("human", "I'm here to help with anything you want to know about git.", True),
    ("human", "Great question. You should consider using a virtual environment, and it's important to pin your "
              "dependencies.", True),
    ("human", "Is there anything else I can help you with regarding asthma?", True),
    ("human", "I'm an AI, so I don't have personal experiences with flights, but I can share some general advice.",
     True),
    ("human", "Here are a few steps:\n1. Back up your files.\n2. Create a new branch.\n3. Merge when you are ready.",
     True),
    ("human", "I'd be happy to help! What topic would you like to explore first?", True),
    ("human", "Feel free to ask if you need more details about the symptoms.", True),
    ("human", "As your assistant, I recommend you check the forecast before packing.", True),
    ("human", "I don't have personal opinions, but many people prefer cats for small apartments.", True),
    ("human", "Glad I could help. Good luck with your career change.", True),
    ("human", "To summarize, you should try booking on a Tuesday and make sure to compare several sites.", True),
    ("human", "Of course! It's a good idea to start with Python, and you could also try JavaScript later.", True),
    ("human", "How may I assist you with your SQL query?", True),
    ("human", "I hope my explanation was helpful. Good luck!", True),
    ("human", "Absolutely. In summary, it's best to keep your inhaler with you at all times.", True),
    ("human", "The main thing is to stay consistent. Keep practising every day and the results will come.", True),
    # Human turns in their own voice.
    ("human", "As a developer I would recommend TypeScript to my team, but is it worth the migration cost?", False),
    ("human", "As a developer I would recommend feature branches. You should try them on your next project too.",
     False),
    ("human", "I'm a nurse and I usually advise patients to use a spacer with their inhaler. Is that still current "
              "advice?", False),
    ("human", "You said 'I hope this helps', but I'm still lost at the merge step.", False),
    ("human", 'Earlier you told me: "Make sure to pin your dependencies. It is important to do it early." Why '
              "does that matter?", False),
    ("human", "Thanks! That makes sense. What should I pack for rain?", False),
    ("human", "How can I help my son manage his asthma at school?", False),
    ("human", "Can you give me some tips for packing light?", False),
    ("human", "My doctor said I should try breathing exercises. Do they really work?", False),
    ("human", "I want to switch careers from teaching to software development. Where should I start?", False),
    ("human", "Here is my code: nums = [1, 2, 3]; nums.reverse(). Why does it change the original?", False),
    ("human", "I tried the steps you gave me. It's important to me that this also works on Windows.", False),
    ("human", "Great question from my colleague: how do we handle merge conflicts?", False),
    ("human", "As an AI researcher, I wonder how assistants like you handle ambiguous questions?", False),
    ("human", "What does a chatbot mean when it says 'I'm just an AI, so I can't'?", False),
    ("human", "I'd like to learn about sourdough baking. Where should I start?", False),
    ("human", "I work as a pharmacist and I'd suggest you double-check the dosage. Make sure to read the label. "
              "What else should I tell customers?", False),
    ("human", "Sure, but what about flights in winter?", False),
    ("human", "In my experience, you should try booking midweek, and make sure to use a price alert.", False),
    ("human", "I'm happy to hear that! How long does the whole process take?", False),
    ("human", "Okay, I will try that tonight.", False),
    # AI turns in the human's voice.
    ("ai", "Can you explain how git rebase works?", True),
    ("ai", "Thanks for the explanation! What about merge conflicts?", True),
    ("ai", "I have a question about my inhaler. How often should I use it?", True),
    ("ai", "What kind of camera do you have?", True),
    ("ai", "I'm curious about how vaccines work. Do they contain live viruses?", True),
    ("ai", "That was very helpful. Could you also tell me about travel insurance?", True),
    ("ai", "I want to learn Python. What should I do first?", True),
    ("ai", "Which airline do you usually fly with? And how far ahead do you book?", True),
    ("ai", "What do you think about switching to TypeScript?", True),
    ("ai", "Interesting. So is asthma hereditary? And can it be cured?", True),
    ("ai", "Could you help me write a SQL query that finds duplicate emails?", True),
    ("ai", "Thank you so much for your help. Is there a cheaper option?", True),
    ("ai", "What are the best neighbourhoods to stay in when visiting Tokyo?", True),
    ("ai", "I'd like to know more about budgeting apps. Are any of them free?", True),
    ("ai", "Hmm, I never thought about that. My grandmother had asthma too.", True),
    # AI turns in their own voice.
    ("ai", "Why does this happen? Because cold air makes the airways narrow, which triggers the symptoms.", False),
    ("ai", "Rebase replays your commits on top of another branch, so the history stays linear. Would you like an "
           "example?", False),
    ("ai", "```python\nvalue = a if a is not None else b  # is a None?\n```\nThis is Python's conditional "
           "expression.", False),
    ("ai", "In JavaScript, `const label = ok ? 'yes' : 'no';` picks one of two values.", False),
    ("ai", "You could ask your doctor: 'Can you explain my test results?' That helps you understand the numbers.",
     False),
    ("ai", "The full guide is at https://example.org/search?q=asthma and covers inhaler technique.", False),
    ("ai", "I'm sorry to hear that you're struggling. It is common to feel overwhelmed at first, and it gets "
           "easier with practice.", False),
    ("ai", "The OpenAI API takes a list of messages and returns a completion. What do the parameters do? "
           "Temperature controls randomness, and max_tokens limits the length.", False),
    ("ai", "Is there anything else you'd like to know about Tokyo?", False),
    ("ai", "A common worry is: what happens if you miss a dose? Take it as soon as you remember, unless the next "
           "one is close.", False),
    ("ai", "Thanks for asking! Weather is the short-term state of the air, while climate is its long-term average.",
     False),
    ("ai", "Can you freeze cooked rice? Yes: cool it quickly, store it airtight and use it within a month.", False),
    ("ai", "If your manager asks what you think about the plan, explain the trade-offs first.", False),
    ("ai", "Good question. Would you like me to walk you through an example?", False),
    ("ai", "Here is the query:\n\n```sql\nSELECT LOWER(email), COUNT(*) FROM users GROUP BY 1 HAVING COUNT(*) > 1;\n"
           "```\n\nWhy LOWER? It makes the comparison ignore case.", False),
    ("ai", "Certainly! Here are three tips: book early, be flexible with dates, and compare several sites.", False),
    ("ai", "That depends on your goals. If you want a job quickly, web development has the most openings.", False),
)  # fmt: skip
