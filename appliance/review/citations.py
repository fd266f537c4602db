"""Citations in a document's own text: where a quoted value, a number or a topic occurs.

Every span returned is a pair of character offsets into the text it was searched in, so
``text[start:end]`` is the evidence by construction. A string is found exactly, else with
whitespace runs and case folded (offsets mapped back to the original); a number is found
as a number (thousands separators and trailing zeros aside); a topic is the sentence its
content words cover best, by the same coverage measure as ask's verification
(``grounding.coverage``), when that reaches ``TOPIC_SUPPORT``.
"""

from __future__ import annotations

import bisect
import re
from typing import Literal

from appliance.review.grounding import content_words, coverage, trimmed

TOPIC_SUPPORT = 0.6
Match = Literal["exact", "normalised", "number", "topic"]
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")
_WORD_RUN = re.compile(r"\S+")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")


def find_span(text: str, value: str) -> tuple[int, int, Match] | None:
    """Where ``value`` occurs in ``text``: exactly, else whitespace and case aside."""
    return FoldedText(text).find(value)


class FoldedText:
    """A text lower-cased with whitespace runs as one space, mapped back to its offsets.

    Built once per document: a search is then one ``str.find`` plus two bisections.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] = []  # where each word starts, in the original
        self._folded_starts: list[int] = []  # ... and in the folded text
        words: list[str] = []
        at = 0
        for m in _WORD_RUN.finditer(text):
            self._starts.append(m.start())
            self._folded_starts.append(at)
            words.append(_fold(m.group()))
            at += len(m.group()) + 1
        self.folded = " ".join(words)

    def find(self, value: str) -> tuple[int, int, Match] | None:
        """The first whole-word occurrence of ``value``: "Ann" is not found in "Annual"."""
        wanted = value.strip()
        if not wanted:
            return None
        at = _find_bounded(self.text, wanted)
        if at is not None:
            return at, at + len(wanted), "exact"
        needle = " ".join(_fold(w) for w in wanted.split())
        at = _find_bounded(self.folded, needle)
        if at is None:
            return None
        return self._origin(at), self._origin(at + len(needle) - 1) + 1, "normalised"

    def _origin(self, folded_at: int) -> int:
        word = bisect.bisect_right(self._folded_starts, folded_at) - 1
        return self._starts[word] + folded_at - self._folded_starts[word]


def _find_bounded(haystack: str, needle: str) -> int | None:
    """Where ``needle`` first occurs not glued to a letter or digit on either side."""
    at = haystack.find(needle)
    while at >= 0:
        end = at + len(needle)
        glued_left = at > 0 and needle[0].isalnum() and haystack[at - 1].isalnum()
        glued_right = end < len(haystack) and needle[-1].isalnum() and haystack[end].isalnum()
        if not (glued_left or glued_right):
            return at
        at = haystack.find(needle, at + 1)
    return None


def _fold(word: str) -> str:
    low = word.lower()
    # a character whose lower case is longer ("İ") is kept as it is: offsets stay one-to-one
    return (
        low
        if len(low) == len(word)
        else "".join(c if len(c.lower()) != 1 else c.lower() for c in word)
    )


def number_span(text: str, value: float) -> tuple[int, int, Match] | None:
    """The first number in ``text`` equal to ``value`` (``4,500`` and ``4500.0`` match 4500)."""
    for m in _NUMBER.finditer(text):
        if float(m.group().replace(",", "")) == value:
            return m.start(), m.end(), "number"
    return None


def topic_span(text: str, topic: str) -> tuple[int, int, Match] | None:
    """The sentence of ``text`` that ``topic``'s content words cover best, if they cover it."""
    if not content_words(topic):
        return None
    best, span = 0.0, None
    for m in _SENTENCE.finditer(text):
        score = coverage(topic, m.group())
        if score > best:
            best, span = score, m.span()
    if span is None or best < TOPIC_SUPPORT:
        return None
    start, end = trimmed(text, *span)
    return start, end, "topic"
