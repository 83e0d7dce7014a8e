"""Each paper source's native metric: ``metric(prediction, references, choices) -> [0, 1]``.

* ``substring``: RULER's ``string_match_all``, the share of references found in the prediction
  (case-insensitive substring);
* ``choice``: multiple choice; the letter read from the prediction ("B", "(B)", "B.",
  "Answer: B", "The correct answer is (B)", or the option's own text) equals the reference
  letter;
* ``cloze``: LooGLE's cloze exact match, the share of masks whose predicted entity equals the
  reference after normalization (references are ``"<mask-0>: Entity"``);
* ``rouge_l``: ROUGE-L F1 (the ``rouge-score`` library), best over references; summaries;
* ``f1``: token F1 with LongBench's normalization (lower case, no punctuation, no articles),
  best over references; free-form QA;
* ``exact``: normalized exact match against any reference;
* ``exp_similarity``: ZeroSCROLLS SpaceDigest's exponential similarity of percentages,
  ``2 ** (-10 * |p - g| / 100)`` (``p`` the first number in the prediction).

Directives (``[[...]]``) are removed first and, when the prediction holds ``<answer>...</answer>``,
only that part is scored.
"""

from __future__ import annotations

import ast
import json
import re
import string
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from ..protocol.parser import strip_directives

if TYPE_CHECKING:
    from .sources import SourceExample

Metric = Callable[..., float]

_ANSWER = re.compile(r"<answer\s*>(.*?)(?:</answer\s*>|$)", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def clean(prediction: str) -> str:
    """The scored part of a prediction: directives removed, the ``<answer>`` body if any."""
    text = strip_directives(prediction or "")
    m = _ANSWER.search(text)
    return (m.group(1) if m else text).strip()


def normalize(text: str) -> str:
    """LongBench/SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def substring(prediction: str, references: list[str], choices: list[str] | None = None) -> float:
    """RULER ``string_match_all``: share of references found (case-insensitive)."""
    if not references:
        return 0.0
    p = clean(prediction).lower()
    return sum(r.lower() in p for r in references) / len(references)


def exact(prediction: str, references: list[str], choices: list[str] | None = None) -> float:
    p = normalize(clean(prediction))
    return float(any(p == normalize(r) for r in references))


def token_f1(prediction: str, references: list[str], choices: list[str] | None = None) -> float:
    """LongBench ``qa_f1_score``: token F1 after normalization, best over references."""
    pred = normalize(clean(prediction)).split()
    best = 0.0
    for ref in references:
        gold = normalize(ref).split()
        same = sum((Counter(pred) & Counter(gold)).values())
        if same:
            prec, rec = same / len(pred), same / len(gold)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, references: list[str], choices: list[str] | None = None) -> float:
    """ROUGE-L F1 (``rouge-score``), best over references."""
    p = clean(prediction)
    if not p or not references:
        return 0.0
    return max(_rouge().score(r, p)["rougeL"].fmeasure for r in references)


def choice_letter(prediction: str, choices: list[str] | None = None) -> str | None:
    """The choice letter a prediction gives, or None when it names none (or several)."""
    k = len(choices) if choices else 4
    letters = "".join(chr(ord("A") + i) for i in range(k))
    L = f"[{letters}]"
    text = clean(prediction)
    patterns = [
        # "Answer: B", "the answer is (B)"
        rf"answer\s*(?:is|:)?\s*[:\-]?\s*\(?\s*({L})\s*\)?(?![\w-])",
        rf"^\W*\(?({L})\)?\W*$",  # the whole answer is a letter: "B", "(B)", "B."
        rf"^\s*\(?({L})[\.\):](?!\w)",  # "B. text", "(B) text", "B) text"
        rf"\(({L})\)",  # "(B)" anywhere
    ]
    for pat in patterns:
        m = re.search(pat, text, re.IGNORECASE if pat.startswith("answer") else 0)
        if m:
            return m.group(1).upper()
    if choices:  # the option's own text
        p = normalize(text)
        hits = [i for i, c in enumerate(choices) if normalize(c) and normalize(c) in p]
        if len(hits) == 1:
            return letters[hits[0]]
    # one standalone letter; "A" may be an article, so it never counts here
    standalone = set(re.findall(rf"(?<![\w'])({L})(?![\w'])", text)) - {"A"}
    if len(standalone) == 1:
        return standalone.pop()
    return None


def choice(prediction: str, references: list[str], choices: list[str] | None = None) -> float:
    """1 if the letter read from the prediction is the reference letter."""
    got = choice_letter(prediction, choices)
    return float(got is not None and bool(references) and got == references[0].strip().upper())


def _as_dict(text: str) -> dict | None:
    m = re.search(r"\{.*\}", text, re.DOTALL)
    if not m:
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            d = parse(m.group())
        except Exception:  # noqa: BLE001 - any unparsable text is "no dict"
            continue
        if isinstance(d, dict):
            return {str(k): str(v) for k, v in d.items()}
    return None


def cloze(prediction: str, references: list[str], choices: list[str] | None = None) -> float:
    """LooGLE cloze exact match: share of masks whose predicted entity equals the reference.

    References are ``"<mask-i>: Entity"``; the prediction may be LooGLE's JSON/dict answer or
    lines ``<mask-i>: Entity``; with a single mask, a bare entity also counts."""
    if not references:
        return 0.0
    text = clean(prediction)
    given = _as_dict(text) or {}
    for m in re.finditer(r"(<mask-\d+>)\s*[:=]\s*['\"]?([^\n,'\"}]+)", text):
        given.setdefault(m.group(1), m.group(2))
    hits = 0
    for ref in references:
        key, _, entity = ref.partition(":")
        if not entity:  # a reference without a mask name: the whole answer is the entity
            key, entity = "", ref
        got = given.get(key.strip())
        if got is None and len(references) == 1:
            got = text
        hits += got is not None and normalize(got) == normalize(entity)
    return hits / len(references)


def exp_similarity(prediction: str, references: list[str],
                   choices: list[str] | None = None) -> float:
    """ZeroSCROLLS SpaceDigest: ``2 ** (-10 * |p - g| / 100)`` for percentages p, g."""
    m = _NUMBER.search(clean(prediction).replace(",", ""))
    if not m or not references:
        return 0.0
    g = _NUMBER.search(references[0].replace(",", ""))
    if not g:
        return 0.0
    return 2.0 ** (-10.0 * abs(float(m.group()) - float(g.group())) / 100.0)


METRICS: dict[str, Metric] = {
    "substring": substring, "choice": choice, "cloze": cloze, "rouge_l": rouge_l,
    "f1": token_f1, "exact": exact, "exp_similarity": exp_similarity,
}


def score_example(example: SourceExample, answer: str) -> float:
    """The example's native score of ``answer`` in ``[0, 1]``."""
    if example.metric not in METRICS:
        raise ValueError(f"unknown metric {example.metric!r}; choose from {', '.join(METRICS)}")
    return float(METRICS[example.metric](answer, list(example.answers), example.choices))
