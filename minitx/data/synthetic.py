"""The built-in offline task: English number words → German number words, deterministic from a seed.

German says the units before the tens ("seventy two" → "zwei und siebzig"), so a model must learn
to reorder, not copy: attention has to look ahead in the source. Numbers run from 0 to 999,999,
with every length from 1 to 6 digits drawn equally often (as far as a length has numbers left);
the validation and test numbers never occur in training.
"""

from __future__ import annotations

import random

EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
EN_TEENS = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
EN_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
DE_ONES = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
DE_TEENS = [
    "zehn",
    "elf",
    "zwölf",
    "dreizehn",
    "vierzehn",
    "fünfzehn",
    "sechzehn",
    "siebzehn",
    "achtzehn",
    "neunzehn",
]
DE_TENS = [
    "_",
    "_",
    "zwanzig",
    "dreißig",
    "vierzig",
    "fünfzig",
    "sechzig",
    "siebzig",
    "achtzig",
    "neunzig",
]

SPLIT_SIZES = {"validation": 500, "test": 500}


def english_words(n: int) -> str:
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    parts = []
    if thousands:
        parts += [_english_below_1000(thousands), "thousand"]
    if rest:
        parts.append(_english_below_1000(rest))
    return " ".join(parts)


def _english_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [EN_ONES[hundreds], "hundred"] if hundreds else []
    if 10 <= rest < 20:
        parts.append(EN_TEENS[rest - 10])
    elif rest:
        tens, ones = divmod(rest, 10)
        parts += ([EN_TENS[tens]] if tens else []) + ([EN_ONES[ones]] if ones else [])
    return " ".join(parts)


def german_words(n: int) -> str:
    if n == 0:
        return "null"
    thousands, rest = divmod(n, 1000)
    parts = []
    if thousands:
        multiplier = _german_below_1000(thousands)
        if multiplier.endswith("eins"):  # "eins" only stands alone: einundzwanzig, eintausend
            multiplier = multiplier[: -len("eins")] + "ein"
        parts += [multiplier, "tausend"]
    if rest:
        parts.append(_german_below_1000(rest))
    return " ".join(parts)


def _german_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [_german_ein(hundreds), "hundert"] if hundreds else []
    if 10 <= rest < 20:
        parts.append(DE_TEENS[rest - 10])
    elif rest:
        tens, ones = divmod(rest, 10)
        if tens and ones:
            parts += [_german_ein(ones), "und", DE_TENS[tens]]  # the reordering: units first
        else:
            parts.append(DE_TENS[tens] if tens else DE_ONES[ones])
    return " ".join(parts)


def _german_ein(digit: int) -> str:
    return "ein" if digit == 1 else DE_ONES[digit]


def _distinct_numbers(rng: random.Random, total: int) -> list[int]:
    """`total` distinct numbers below 1,000,000, each digit count (1-6) drawn equally often.

    Uniform sampling would make 99.9% of them 4 to 6 digits long, and a model trained on that
    appends "tausend …" to short numbers it has hardly seen end. The numbers with 1-3 digits (1,000
    in all) run out and are then skipped; the shuffle spreads them over the splits.
    """
    numbers: set[int] = set()
    while len(numbers) < total:
        digits = rng.randint(1, 6)
        numbers.add(rng.randrange(0 if digits == 1 else 10 ** (digits - 1), 10**digits))
    ordered = sorted(numbers)  # a set's order is not part of the seed's promise
    rng.shuffle(ordered)
    return ordered


def number_pairs(train_size: int, seed: int) -> dict[str, dict[str, list[str]]]:
    """{split: {"src": [...], "tgt": [...]}} for train, validation and test, disjoint by number."""
    rng = random.Random(seed)
    total = train_size + sum(SPLIT_SIZES.values())
    numbers = _distinct_numbers(rng, total)
    sizes = {"train": train_size, **SPLIT_SIZES}
    splits, start = {}, 0
    for split, size in sizes.items():
        chosen = numbers[start : start + size]
        start += size
        splits[split] = {
            "src": [english_words(n) for n in chosen],
            "tgt": [german_words(n) for n in chosen],
        }
    return splits


# Gold word alignments. Each word gets a slot — (group, role), the group being the thousands
# multiplier or the part below 1000 — built along the same branches as the word functions above;
# an English and a German word are linked when they fill the same slot. "und" fills none.
Slot = tuple[str, str]


def number_alignments(n: int) -> set[tuple[int, int]]:
    """Gold (English word index, German word index) links for `english_words(n)` / `german_words(n)`.

    Every English word has exactly one counterpart, and so has every German word but "und":
    digits ↔ digits ("one" ↔ "eins"/"ein"), tens ↔ tens, teens ↔ teens, "hundred" ↔ "hundert",
    "thousand" ↔ "tausend", "zero" ↔ "null".
    """
    german_position = {slot: j for j, slot in enumerate(_german_slots(n)) if slot is not None}
    return {(i, german_position[slot]) for i, slot in enumerate(_english_slots(n))}


def _english_slots(n: int) -> list[Slot]:
    """One slot per word of `english_words(n)`, same branches."""
    if n == 0:
        return [("", "zero")]
    thousands, rest = divmod(n, 1000)
    slots: list[Slot] = []
    if thousands:
        slots += [*_english_slots_below_1000(thousands, "thousands"), ("", "thousand")]
    if rest:
        slots += _english_slots_below_1000(rest, "rest")
    return slots


def _english_slots_below_1000(n: int, group: str) -> list[Slot]:
    hundreds, rest = divmod(n, 100)
    slots = [(group, "hundreds digit"), (group, "hundred")] if hundreds else []
    if 10 <= rest < 20:
        slots.append((group, "teen"))
    elif rest:
        tens, ones = divmod(rest, 10)
        slots += ([(group, "tens")] if tens else []) + ([(group, "ones")] if ones else [])
    return slots


def _german_slots(n: int) -> list[Slot | None]:
    """One slot per word of `german_words(n)`, same branches; None for "und"."""
    if n == 0:
        return [("", "zero")]
    thousands, rest = divmod(n, 1000)
    slots: list[Slot | None] = []
    if thousands:  # "eins" → "ein" changes a word, not the number of words
        slots += [*_german_slots_below_1000(thousands, "thousands"), ("", "thousand")]
    if rest:
        slots += _german_slots_below_1000(rest, "rest")
    return slots


def _german_slots_below_1000(n: int, group: str) -> list[Slot | None]:
    hundreds, rest = divmod(n, 100)
    slots: list[Slot | None] = [(group, "hundreds digit"), (group, "hundred")] if hundreds else []
    if 10 <= rest < 20:
        slots.append((group, "teen"))
    elif rest:
        tens, ones = divmod(rest, 10)
        if tens and ones:
            slots += [(group, "ones"), None, (group, "tens")]  # "zwei und siebzig": units first
        else:
            slots.append((group, "tens") if tens else (group, "ones"))
    return slots
