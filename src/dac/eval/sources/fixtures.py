"""Small fixture files in each source's published layout, written from the project's offline
text (State of the Union sentences, :mod:`dac.tasks.sources`), so loaders are tested on the
layouts users bring without downloading a dataset.

Answers are real: a blanked word, a masked name, a sentence or the lead of the document are
taken from the context itself. The files are a pure function of this code (seeded by file
name), so a test can write them again and compare with the committed copies.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from ...tasks import retrieval
from ...tasks import sources as src
from ...tasks.core import insert_at_depths

_WORD = re.compile(r"\b([a-z]{7,})\b")
_NAME = re.compile(r"(?<=[a-z,;] )([A-Z][a-z]{3,}(?: [A-Z][a-z]+)?)")


def _prose(rng: random.Random, words: int) -> list[str]:
    return src.prose(rng.random(), words)


def _blank(rng: random.Random, sents: list[str]) -> tuple[str, str]:
    """A question whose answer is a word blanked out of one sentence of the document."""
    cands = [(s, m) for s in sents for m in _WORD.finditer(s)]
    s, m = cands[rng.randrange(len(cands))]
    shown = s[:m.start()] + "_____" + s[m.end():]
    return f'Which word fills the blank in this sentence of the document: "{shown}"', m.group(1)


def _mc(rng: random.Random, sents: list[str]) -> tuple[str, list[str], str]:
    """Which of four sentences is in the document: one of its own, three from elsewhere."""
    right = rng.choice([s for s in sents if 40 <= len(s) <= 200] or sents)
    others = [s for s in src.prose((rng.random() + 0.5) % 1, 400) if s not in sents
              and 40 <= len(s) <= 200]
    opts = rng.sample(others, 3)
    k = rng.randrange(4)
    opts.insert(k, right)
    return "Which of these sentences appears in the document?", opts, "ABCD"[k]


def _cloze(rng: random.Random, sents: list[str]) -> tuple[str, dict[str, str]] | None:
    """A sentence with up to two names masked (LooGLE's ``<mask-i>``)."""
    cands = [s for s in sents if len(set(_NAME.findall(s))) >= 1]
    if not cands:
        return None
    s = rng.choice(cands)
    names = list(dict.fromkeys(_NAME.findall(s)))[:2]
    answer = {}
    for i, name in enumerate(names):
        s = re.sub(rf"\b{re.escape(name)}\b", f"<mask-{i}>", s)
        answer[f"<mask-{i}>"] = name
    return s, answer


def _words(sents: list[str]) -> int:
    return sum(len(s.split()) for s in sents)


def _dump_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


# --- RULER -------------------------------------------------------------------------------------

_RULER_TEMPLATE = ("Some special magic {v} are hidden within the following text. Make sure to "
                   "memorize it. I will quiz you about the {v} afterwards.\n{context}\n"
                   "What are all the special magic {v} for {query} mentioned in the provided "
                   "text?")


def _ruler(task: str, rng: random.Random, index: int) -> dict[str, Any]:
    kind = "uuid" if task in ("niah_single_3", "niah_multikey_3") else "number"
    v = retrieval.KINDS[kind]

    def value() -> str:
        return src.uuid4(rng) if kind == "uuid" else src.number(rng)

    if task == "niah_multikey_3":
        key = src.uuid4(rng)
        hay = [retrieval.needle(src.uuid4(rng), src.uuid4(rng), "uuid") for _ in range(40)]
    elif task == "niah_multikey_2":
        keys = src.distinct_keys(rng, 41)
        key, hay = keys[0], [retrieval.needle(k, src.number(rng)) for k in keys[1:]]
    else:
        key = src.distinct_keys(rng, 1)[0]
        hay = src.noise(500) if task == "niah_single_1" else _prose(rng, 500)
    val = value()
    units, _ = insert_at_depths(hay, [retrieval.needle(key, val, kind)], [rng.random()])
    text = _RULER_TEMPLATE.format(v=v, context=" ".join(units), query=key)
    return {"index": index, "input": text, "outputs": [val], "length": len(text.split()),
            "length_w_model_temp": len(text.split()),
            "answer_prefix": f" The special magic {v} for {key} mentioned in the provided "
                             "text are"}


# --- the file writers --------------------------------------------------------------------------

def _qmsum(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(3):
        sents = _prose(rng, rng.randrange(400, 900))
        out.append({"input": "Summarize the opening of the address.",
                    "context": " ".join(sents), "answers": [" ".join(sents[:3])],
                    "length": _words(sents), "dataset": "qmsum", "language": "en",
                    "all_classes": None, "_id": f"fixture-qmsum-{i}"})
    return out


def _longbench_v2(rng: random.Random) -> list[dict[str, Any]]:
    from .longbench import V2_DOMAINS

    subs = {"Multi-Document QA": "Multi-news", "Single-Document QA": "Governmental",
            "Long-dialogue History Understanding": "Dialogue history QA",
            "Code Repository Understanding": "Code repo QA",
            "Long In-context Learning": "User guide QA"}
    out = []
    for domain in [*V2_DOMAINS.values(), "Long In-context Learning"]:
        for j in range(2 if domain in V2_DOMAINS.values() else 1):
            sents = _prose(rng, rng.randrange(300, 800))
            q, opts, ans = _mc(rng, sents)
            rec = {"_id": f"fixture-{len(out):02d}", "domain": domain,
                   "sub_domain": subs[domain], "difficulty": "easy", "length": "short",
                   "question": q}
            rec.update({f"choice_{x}": o for x, o in zip("ABCD", opts)})
            rec.update({"answer": ans, "context": " ".join(sents)})
            out.append(rec)
    return out


def _loogle(rng: random.Random, task: str) -> list[dict[str, Any]]:
    out = []
    for i in range(2):
        sents = _prose(rng, rng.randrange(600, 1500))
        rec: dict[str, Any] = {"input": "\n".join(sents), "title": f"fixture-{task}-{i}"}
        if task == "longdep_summarization":
            rec.update({"qa_pairs": "none", "output": " ".join(sents[:4]), "question": "none"})
        elif task == "longdep_qa":
            pairs = []
            for _ in range(2):
                q, a = _blank(rng, sents)
                pairs.append({"Q": q, "A": a, "type": "comprehension_and_reasoning",
                              "S": [s for s in sents if a in s][:1]})
            rec.update({"qa_pairs": repr(pairs), "output": "none"})
        else:
            pairs = []
            while len(pairs) < 2:
                c = _cloze(rng, sents)
                if c is not None:
                    pairs.append({"Q": c[0], "S": "", "A": c[1]})
            rec.update({"qa_pairs": repr(pairs), "output": None})
        out.append(rec)
    return out


def _zeroscrolls(rng: random.Random, task: str) -> list[dict[str, Any]]:
    out = []
    for i in range(3):
        sents = _prose(rng, rng.randrange(300, 700))
        if task == "quality":
            q, opts, ans = _mc(rng, sents)
            head = ("You are provided a story and a multiple-choice question with 4 possible "
                    "answers (marked by A, B, C, D). Choose the best answer by writing its "
                    "corresponding letter (either A, B, C, or D).\n\nStory:\n")
            doc = "\n".join(sents)
            query = q + "\n\n" + "\n".join(f" ({x}) {o}" for x, o in zip("ABCD", opts))
            mid, tail = "\n\nQuestion and Possible Answers:\n", "\n\nAnswer:"
            output = f"({ans}) {opts['ABCD'.index(ans)]}"
        else:
            labels = [rng.random() < 0.5 for _ in range(10)]
            reviews = [f"Review {j + 1}: {s} Overall, the stay was "
                       f"{'wonderful' if good else 'disappointing'}."
                       for j, (s, good) in enumerate(zip(sents, labels))]
            head = ("You are given a list of reviews about a specific hotel. Each review is "
                    "either positive or negative. What is the percentage of positive reviews "
                    "(e.g. 60%, 34%, etc.)? Do not provide any explanation.\n\nReviews:\n")
            doc, query, mid = "\n\n".join(reviews), "", ""
            tail = "\n\nPercentage of Positive Reviews:"
            output = f"{round(100 * sum(labels) / len(labels))}%"
        text = head + doc + mid + query + tail
        ds = len(head)
        qs = ds + len(doc) + len(mid)
        out.append({"id": f"fixture-{task}-{i}", "pid": f"fixture-{task}-{i}", "input": text,
                    "output": output, "document_start_index": ds,
                    "document_end_index": ds + len(doc), "query_start_index": qs,
                    "query_end_index": qs + len(query), "truncation_seperator": "... [The "
                    "rest of the story is omitted]\n\n" if task == "quality" else "... [The "
                    "rest of the reviews are omitted]\n\n"})
    return out


def _generic(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    sents = _prose(rng, 500)
    q, a = _blank(rng, sents)
    out.append({"id": "qa-0", "context": " ".join(sents), "question": q, "answers": [a],
                "metric": "exact"})
    sents = _prose(rng, 400)
    q, opts, ans = _mc(rng, sents)
    out.append({"id": "mc-0", "context": " ".join(sents), "question": q, "choices": opts,
                "answers": ans})
    sents = _prose(rng, 600)
    half = len(sents) // 2
    q, a = _blank(rng, sents[half:])
    out.append({"id": "chunks-0", "context": " ".join(sents), "question": q, "reference": a,
                "chunks": [" ".join(sents[:half]) + " ", " ".join(sents[half:])],
                "span": "multi"})
    return out


def _errors(rng: random.Random, out_dir: Path) -> list[Path]:
    bad = _qmsum(rng)
    del bad[1]["context"]
    short = [{"id": f"short-{i}", "context": " ".join(_prose(rng, 120)),
              "question": "What is the first word of the document?", "answers": ["x"]}
             for i in range(3)]
    long_ = {"id": "long-0", "context": " ".join(_prose(rng, 3000)),
             "question": "What is the first word of the document?", "answers": ["x"]}
    return [_dump_jsonl(out_dir / "errors" / "qmsum_missing_context.jsonl", bad),
            _dump_jsonl(out_dir / "errors" / "over_budget.jsonl", short[:2] + [long_] + short[2:])]


def fixture_paths(root: str | Path) -> dict[str, Path]:
    """Source name -> its fixture file under ``root`` (as :func:`write_fixtures` writes it)."""
    r = Path(root)
    paths = {f"ruler.{t}": r / "ruler" / t / "validation.jsonl" for t in
             ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_2",
              "niah_multikey_3")}
    paths["longbench.qmsum"] = r / "longbench" / "data" / "qmsum.jsonl"
    for k in ("multidoc_qa", "singledoc_qa", "dialogue_history", "code_repo"):
        paths[f"longbench_v2.{k}"] = r / "longbench_v2" / "data.json"
    paths["loogle.summarization"] = r / "loogle" / "longdep_summarization.jsonl"
    paths["loogle.longdep_qa"] = r / "loogle" / "longdep_qa.jsonl"
    paths["loogle.shortdep_cloze"] = r / "loogle" / "shortdep_cloze.jsonl"
    paths["zeroscrolls.quality"] = r / "zeroscrolls" / "quality" / "validation.jsonl"
    paths["zeroscrolls.space_digest"] = r / "zeroscrolls" / "space_digest" / "validation.jsonl"
    paths["jsonl"] = r / "generic" / "examples.jsonl"
    return paths


def write_fixtures(out_dir: str | Path) -> list[Path]:
    """Write one small fixture file per source layout (plus the error cases) under
    ``out_dir``; returns the files written."""
    root = Path(out_dir)
    paths = fixture_paths(root)

    def rng(name: str) -> random.Random:
        return random.Random(f"dac-fixture|{name}")

    written = []
    for name, path in paths.items():
        family, _, task = name.partition(".")
        if path in written:
            continue
        if family == "ruler":
            r = rng(name)
            recs = [_ruler(task, r, i) for i in range(3)]
        elif family == "longbench":
            recs = _qmsum(rng(name))
        elif family == "longbench_v2":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_longbench_v2(rng(family)), ensure_ascii=False,
                                       indent=1) + "\n")
            written.append(path)
            continue
        elif family == "loogle":
            recs = _loogle(rng(name), path.stem)
        elif family == "zeroscrolls":
            recs = _zeroscrolls(rng(name), task)
        else:
            recs = _generic(rng(name))
        written.append(_dump_jsonl(path, recs))
    return written + _errors(rng("errors"), root)
