"""Taxonomies: the labels an organisation classifies into, their rules and routing thresholds.

A taxonomy is data an admin writes (YAML or JSON), checked here once, before anything is
stored: at least two labels, no duplicates, valid regular expressions, sane thresholds.
Routing turns a confidence into what happens next: ``auto`` (no human), ``review``
(automated, but a sample goes to a reviewer to measure precision), ``human`` (waits). A small
share of ``auto`` results is also drawn as quality samples: they stay automated, and a
reviewer's verdict on them measures the precision of the automated route itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from appliance.errors import InvalidInput

Route = Literal["auto", "review", "human"]
Tier = Literal["rule", "model", "zero-shot"]
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_LABELS = 200


@dataclass(frozen=True, slots=True)
class Rule:
    """A deterministic rule: a regex or any of some keywords in the text -> a label."""

    label: str
    pattern: str | None = None
    keywords: tuple[str, ...] = ()
    confidence: float = 0.99

    def match(self, text: str) -> tuple[int, int] | None:
        """The span of the first match, or None."""
        if self.pattern is not None:
            found = re.search(self.pattern, text, flags=re.IGNORECASE)
            return found.span() if found else None
        lowered = text.lower()
        for word in self.keywords:
            at = lowered.find(word.lower())
            if at >= 0:
                return at, at + len(word)
        return None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Routing: >= ``auto`` automated; >= ``review`` automated and sampled; below, a human.

    ``sample_rate`` is the share of the review band sent to a reviewer; ``auto_sample_rate``
    the share of automated results also sent to one, as quality samples.
    """

    auto: float = 0.95
    review: float = 0.80
    sample_rate: float = 0.10
    auto_sample_rate: float = 0.02


@dataclass(frozen=True, slots=True)
class Taxonomy:
    name: str
    labels: dict[str, str]  # label -> description
    rules: tuple[Rule, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    allow_uncalibrated_auto: bool = False
    min_examples: int = 5

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Taxonomy:
        """Build and validate a taxonomy from its JSON/YAML form (``InvalidInput`` if bad)."""
        if not isinstance(raw, dict):
            raise InvalidInput("a taxonomy is an object with 'name' and 'labels'")
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise InvalidInput(f"unknown taxonomy fields: {', '.join(sorted(unknown))}")
        name = _check_name(raw.get("name"), "taxonomy name")
        labels = _labels(raw.get("labels"))
        rules = tuple(_rule(r, labels, i) for i, r in enumerate(raw.get("rules") or ()))
        thresholds = _thresholds(raw.get("thresholds") or {})
        min_examples = raw.get("min_examples", 5)
        if not isinstance(min_examples, int) or not 2 <= min_examples <= 1000:
            raise InvalidInput("min_examples must be an integer from 2 to 1000")
        auto = raw.get("allow_uncalibrated_auto", False)
        if not isinstance(auto, bool):
            raise InvalidInput("allow_uncalibrated_auto must be true or false")
        return cls(name, labels, rules, thresholds, auto, min_examples)

    def check_label(self, label: str) -> str:
        if label not in self.labels:
            known = ", ".join(self.labels)
            raise InvalidInput(f"unknown label {label!r} in taxonomy {self.name!r}: use {known}")
        return label

    def route(self, confidence: float, *, calibrated: bool, sample_key: str) -> Route:
        """Where a result goes. Uncalibrated scores never skip a human unless opted in."""
        if not calibrated and not self.allow_uncalibrated_auto:
            return "human"
        t = self.thresholds
        if confidence >= t.auto:
            return "auto"
        if confidence >= t.review:
            return "review" if _sampled(sample_key, t.sample_rate) else "auto"
        return "human"

    def quality_sample(self, route: Route, *, sample_key: str) -> bool:
        """Whether an automated result is also reviewed, to measure the auto route's precision.

        Drawn like the review band's sample, under another salt so the two draws are
        independent; only ``auto`` results are drawn (the others reach a person anyway).
        """
        return route == "auto" and _sampled(
            f"auto-sample|{sample_key}", self.thresholds.auto_sample_rate
        )


def _sampled(key: str, rate: float) -> bool:
    """A deterministic draw: the same document and version is always sampled the same way."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInput(
            f"invalid {what} {value!r}: lowercase letters, digits, '.', '_' or '-', at most 64"
        )
    return value


def _labels(raw: Any) -> dict[str, str]:
    if isinstance(raw, list):  # a bare list of names, or of {name, description}
        pairs = [
            (item, "") if isinstance(item, str) else (item.get("name"), item.get("description", ""))
            for item in raw
            if isinstance(item, str | dict)
        ]
        if len(pairs) != len(raw):
            raise InvalidInput("labels: each label is a name or {name, description}")
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise InvalidInput("labels: give a list of labels or a mapping label -> description")
    names = [_check_name(n, "label") for n, _ in pairs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"duplicate labels: {', '.join(duplicates)}")
    if not 2 <= len(names) <= MAX_LABELS:
        raise InvalidInput(f"a taxonomy needs 2 to {MAX_LABELS} labels (got {len(names)})")
    for name, description in pairs:
        if not isinstance(description, str) or len(description) > 2000:
            raise InvalidInput(f"label {name!r}: the description must be text, at most 2000 chars")
    return {str(n): str(d) for n, d in pairs}


def _rule(raw: Any, labels: dict[str, str], i: int) -> Rule:
    if not isinstance(raw, dict) or raw.get("label") not in labels:
        raise InvalidInput(f"rules[{i}]: needs a 'label' that is one of the taxonomy's labels")
    pattern, keywords = raw.get("pattern"), raw.get("keywords") or []
    if (pattern is None) == (not keywords):
        raise InvalidInput(f"rules[{i}]: give either 'pattern' (a regex) or 'keywords'")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > 500:
            raise InvalidInput(f"rules[{i}]: the pattern must be a regex of at most 500 chars")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidInput(f"rules[{i}]: invalid regex {pattern!r}: {exc}") from None
    if not isinstance(keywords, list) or not all(isinstance(k, str) and k for k in keywords):
        raise InvalidInput(f"rules[{i}]: keywords must be a list of non-empty strings")
    confidence = raw.get("confidence", 0.99)
    if not isinstance(confidence, int | float) or not 0 < confidence <= 1:
        raise InvalidInput(f"rules[{i}]: confidence must be in (0, 1]")
    return Rule(raw["label"], pattern, tuple(keywords), float(confidence))


_THRESHOLD_FIELDS = ("auto", "review", "sample_rate", "auto_sample_rate")


def _thresholds(raw: Any) -> Thresholds:
    if not isinstance(raw, dict) or set(raw) - set(_THRESHOLD_FIELDS):
        raise InvalidInput("thresholds: an object with auto, review, sample_rate, auto_sample_rate")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw.values()):
        raise InvalidInput(
            "thresholds: auto, review, sample_rate, auto_sample_rate must be numbers"
        )
    t = Thresholds(**{k: float(v) for k, v in raw.items()})
    if not (0 < t.review <= t.auto <= 1 and 0 <= t.sample_rate <= 1):
        raise InvalidInput("thresholds: need 0 < review <= auto <= 1 and 0 <= sample_rate <= 1")
    if not 0 <= t.auto_sample_rate <= 1:
        raise InvalidInput(
            f"thresholds: need 0 <= auto_sample_rate <= 1 (got {t.auto_sample_rate:g})"
        )
    return t
