"""Short, plain, varied sentences from small word lists: easy enough for a tiny model to learn to transcribe.

Each language has a few templates whose slots are filled from word lists; the full set of combinations is
enumerated, shuffled with the caller's seeded generator and dealt out without repeats until it runs out, so
hundreds of clips stay distinct while the vocabulary stays small.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    text: str
    slots: dict[str, tuple[str, ...]]

    def fillings(self) -> list[str]:
        names = list(self.slots)
        return [
            self.text.format(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*(self.slots[n] for n in names))
        ]


_EN_THINGS = ("mat", "table", "chair", "bed", "wall", "tree", "door", "box")
ENGLISH = (
    Template(
        "The {adj} {animal} {verb} {prep} the {thing}.",
        {
            "adj": ("red", "blue", "green", "black", "white", "brown", "small", "big"),
            "animal": ("cat", "dog", "bird", "horse", "cow", "fox", "duck", "goat"),
            "verb": ("sat", "slept", "jumped", "waited", "stood"),
            "prep": ("on", "under", "near", "behind", "beside"),
            "thing": _EN_THINGS,
        },
    ),
    Template(
        "{name} has {number} {items}.",
        {
            "name": ("Anna", "Peter", "Maria", "John", "Sarah", "David", "Emma", "Tom"),
            "number": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
            "items": ("apples", "oranges", "books", "pens", "cups", "hats"),
        },
    ),
    Template(
        "Please {action} the {thing} {when}.",
        {
            "action": ("open", "close", "clean", "paint", "move", "fix"),
            "thing": ("door", "window", "table", "box", "car", "room"),
            "when": ("today", "tomorrow", "now", "tonight", "later"),
        },
    ),
)

_HI_NAMES = ("राम", "मोहन", "अमित", "राजू", "सुरेश", "विजय")
HINDI = (
    Template(
        "यह {noun} बहुत {adj} है।",
        {
            "noun": ("घर", "पेड़", "कमरा", "बगीचा", "रास्ता", "शहर", "गाँव", "मैदान", "बाज़ार"),
            "adj": ("सुंदर", "साफ़", "भारी", "सफ़ेद", "लाल", "ख़राब", "मज़बूत", "पुराना"),
        },
    ),
    Template(
        "{name} रोज़ {place} जाता है।",
        {"name": _HI_NAMES, "place": ("बाज़ार", "स्कूल", "दफ़्तर", "मंदिर", "शहर", "खेत")},
    ),
    Template(
        "{name} के पास {number} {fruit} हैं।",
        {
            "name": _HI_NAMES,
            "number": ("दो", "तीन", "चार", "पाँच", "छह", "सात"),
            "fruit": ("आम", "सेब", "केले", "गिलास"),
        },
    ),
    Template(
        "आज {time} मौसम {adj} है।",
        {"time": ("सुबह", "शाम", "दोपहर"), "adj": ("अच्छा", "साफ़", "गरम", "ठंडा")},
    ),
)

SENTENCE_TEMPLATES = {"en": ENGLISH, "hi": HINDI}


def all_sentences(lang: str) -> list[str]:
    return sorted({s for template in SENTENCE_TEMPLATES[lang] for s in template.fillings()})


def deal_sentences(lang: str, count: int, rng: random.Random) -> list[str]:
    """``count`` sentences in a seeded order.

    Each sentence picks a template at random (so small templates are as frequent as large ones) and takes the
    next filling from that template's shuffled deck; a deck is reshuffled only once it is used up.
    """
    templates = SENTENCE_TEMPLATES[lang]
    decks: list[list[str]] = [[] for _ in templates]
    dealt = []
    for _ in range(count):
        pick = rng.randrange(len(templates))
        if not decks[pick]:
            decks[pick] = templates[pick].fillings()
            rng.shuffle(decks[pick])
        dealt.append(decks[pick].pop())
    return dealt


def long_paragraph(lang: str, rng: random.Random, sentences: int) -> str:
    """Many sentences in one line: the text of a clip that must run past Whisper's 30 s window."""
    return " ".join(deal_sentences(lang, sentences, rng))
