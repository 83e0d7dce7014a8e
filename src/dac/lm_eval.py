"""lm-evaluation-harness integration: the ``dac`` model type, and the CLI that knows it.

lm-eval (0.4.x, ``pip install dac[lm-eval]``) finds models in its registry only; it has no
entry-point group for third-party models, so ``--model dac`` exists once this module has been
imported. Three ways in, all equivalent:

* ``dac-lm-eval --model dac --model_args pretrained=DIR,protocol=da,policy=dac --tasks ...``
  (or ``python -m dac.lm_eval ...``): imports this module, then hands every argument to
  lm-eval's own CLI (``lm_eval.__main__.cli_evaluate``), so every lm-eval option works;
* Python: ``import dac.lm_eval`` then ``lm_eval.simple_evaluate(model="dac", model_args=...)``;
* Python: ``lm_eval.simple_evaluate(model=DACLM(pretrained=DIR), tasks=[...])``.

Each ``generate_until`` request becomes one prompt of the chosen protocol: the request's
context is split at the last ``question_sep`` (a blank line by default) into a document (cut
into magic chunks under ``da``, into sections under ``brackets``, inline under ``vanilla``)
and a question. The scored string is the protocol's answer (``<answer>`` content, directives
removed), the directive-free text or the raw text (``output=``), cut at the first of the
request's ``until`` strings. Per-sample accounting (attended tokens, decode steps, ...) goes
to a side JSONL file; see ``docs/lm-eval.md``.

``loglikelihood`` requests are refused: they read no generated directive, so under DAC they
would be plain full attention, which ``--model hf`` on the same directory already measures.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

#: what to do without lm-eval (the module still imports, so the package's import checks pass)
MISSING = "dac's lm-eval integration needs lm-eval: pip install 'dac[lm-eval]'"

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    HAVE_LM_EVAL = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_LM_EVAL = False
    LM = object  # type: ignore[assignment,misc]

    def register_model(*names: str) -> Any:  # type: ignore[no-redef]
        return lambda cls: cls

log = logging.getLogger(__name__)

#: where the per-sample stats go when ``stats_path`` is not a model argument (set by
#: :func:`main` from lm-eval's ``--output_path``)
STATS_ENV = "DAC_LM_EVAL_STATS"
#: ``output=`` values: what lm-eval scores
OUTPUTS = ("answer", "stripped", "text")
#: ``until_scope=`` values: where the request's ``until`` strings apply
UNTIL_SCOPES = ("output", "generation")
#: lm-eval generation kwargs mapped onto :class:`dac.runtime.Sampling`
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")
#: lm-eval generation kwargs this model reads (any other is warned about once)
KNOWN_GEN_KWARGS = ("until", "max_gen_toks", *SAMPLING_KEYS)


def split_context(context: str, question_sep: str | None) -> tuple[str, str]:
    """``(document, question)`` of an lm-eval context: cut at the last ``question_sep``,
    which belongs to neither part. No separator (``None`` / ``""``), no occurrence, or
    nothing after it: the document is empty and the whole context is the question."""
    if question_sep:
        i = context.rfind(question_sep)
        if i >= 0 and context[i + len(question_sep):].strip():
            return context[:i], context[i + len(question_sep):].strip()
    return "", context.strip()


def unescape(value: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` in a model argument as the characters they name (a shell
    passes ``question_sep=\\n\\n`` as backslashes, and lm-eval strips real whitespace)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[value[i + 1]])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def cut_at_stops(text: str, until: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to the earliest of the ``until`` strings, and the string that cut it."""
    best, hit = len(text), None
    for s in until:
        if not s:
            continue
        i = text.find(s)
        if 0 <= i < best:
            best, hit = i, s
    return text[:best], hit


def truncate_result(result: Any, tokenizer: Any, until: Sequence[str]) -> tuple[Any, str | None]:
    """``result`` as if generation had stopped at the first ``until`` string of its raw text:
    the text cut there, and only the decode steps and directive events of the tokens that
    wrote it (the token that completes the stop string is the last one generated)."""
    text, hit = cut_at_stops(result.text, until)
    if hit is None:
        return result, None
    ids = list(result.generated_ids)
    end = len(text) + len(hit)

    def decoded(k: int) -> int:
        return len(tokenizer.decode(ids[:k], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False))

    lo, hi = 1, len(ids)  # the fewest tokens whose text reaches the stop string's end
    while lo < hi:
        mid = (lo + hi) // 2
        if decoded(mid) >= end:
            hi = mid
        else:
            lo = mid + 1
    n = min(lo, len(ids))
    from .protocol.base import get_protocol

    steps = [s for s in result.steps if s.step < n]
    k = len(steps)  # blocks / block_share hold one entry per recorded step
    out = replace(result, text=text, answer=get_protocol(result.protocol).answer(text),
                  steps=steps, events=[e for e in result.events if e.step < n],
                  blocks=result.blocks[:k], block_share=result.block_share[:k],
                  generated_ids=ids[:n], terminated=True)
    return out, hit


def pick_device(device: str | None) -> str | None:
    """``device``, or the CPU when it names CUDA on a machine without it: lm-eval's CLI
    passes ``--device cuda:0`` unless told otherwise (as its own ``hf`` model, fall back)."""
    if device and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            log.warning("dac: device %s is not available; using cpu", device)
            return "cpu"
    return device


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _batch_size(value: Any) -> int:
    if value is None:
        return 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        log.warning("dac: batch_size %r is not a number (auto is not supported); using 1", value)
        return 1
    if n < 1:
        raise ValueError(f"batch_size must be at least 1, got {value!r}")
    return n


@register_model("dac")
class DACLM(LM):
    """A DAC model for lm-eval: ``generate_until`` under a protocol and a policy.

    Model arguments (``--model_args k=v,...``): ``pretrained`` (a local model directory),
    ``protocol`` (``da``, ``brackets``, ``vanilla``; default: the directory's own),
    ``policy`` (default ``dac``), ``question_sep`` (default a blank line; ``""``: the whole
    context is the question), ``output`` (``answer``, ``stripped`` or ``text``),
    ``until_scope`` (``output`` or ``generation``), ``max_gen_toks`` (when a task sets none;
    default 256), ``min_gen_toks`` (a floor on every request's budget, room to reason; default
    0), ``chunk_tokens`` (magic-chunk size under ``da``, default 2048), ``section_chars``
    (``brackets`` sections), ``thinking``, ``bound_sections``, ``stats_path``, ``device``,
    ``dtype``, ``batch_size``."""

    def __init__(self, pretrained: str, protocol: str | None = None, policy: str = "dac",
                 question_sep: str | None = "\n\n", output: str = "answer",
                 until_scope: str = "output", max_gen_toks: int = 256, min_gen_toks: int = 0,
                 chunk_tokens: int = 2048, section_chars: int | None = None,
                 thinking: bool | str = False, bound_sections: bool | str = True,
                 stats_path: str | None = None, device: str | None = None,
                 dtype: str | None = None, batch_size: int | str | None = 1,
                 max_batch_size: int | None = None, **unknown: Any):
        if not HAVE_LM_EVAL:
            raise ImportError(MISSING)
        super().__init__()
        if unknown:
            raise ValueError(f"dac: unknown model argument(s) {', '.join(sorted(unknown))}; "
                             "see docs/lm-eval.md")
        from .engines.base import HFEngine
        from .models import load, load_defaults
        from .planning import get_policy
        from .protocol.base import get_protocol

        if output not in OUTPUTS:
            raise ValueError(f"dac: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if until_scope not in UNTIL_SCOPES:
            raise ValueError(f"dac: until_scope must be one of {', '.join(UNTIL_SCOPES)}, "
                             f"got {until_scope!r}")
        self.max_gen_toks, self.min_gen_toks = int(max_gen_toks), int(min_gen_toks)
        self.chunk_tokens = int(chunk_tokens)
        if self.max_gen_toks < 1 or self.min_gen_toks < 0 or self.chunk_tokens < 16:
            raise ValueError("dac: need max_gen_toks >= 1, min_gen_toks >= 0, chunk_tokens >= 16")
        self.policy = get_policy(str(policy))  # a bad spec fails before the model loads
        self.policy_name = str(policy)
        defaults = load_defaults(pretrained) if Path(str(pretrained)).is_dir() else None
        self.protocol_name = protocol or (defaults.protocol if defaults else "da")
        self.protocol = get_protocol(self.protocol_name)
        model, tok = load(str(pretrained), device=pick_device(device), dtype=dtype)
        assert defaults is not None  # load() checked the directory
        self.engine = HFEngine(model, tok)
        self.tokenizer = tok
        self.defaults = defaults
        self.plan = defaults.plan
        self.pretrained = str(pretrained)
        self.question_sep = unescape(question_sep) if isinstance(question_sep, str) else None
        self.output = output
        self.until_scope = until_scope
        self.section_chars = int(section_chars) if section_chars is not None else None
        self.thinking = _flag(thinking, "thinking")
        self.bound_sections = _flag(bound_sections, "bound_sections")
        self.batch_size = _batch_size(batch_size)
        stats = stats_path or os.environ.get(STATS_ENV)
        self.stats_path = Path(stats) if stats else None
        #: one record per generated sample, in the order generated (also the JSONL's lines)
        self.records: list[dict[str, Any]] = []
        self._warned: set[str] = set()

    # -- prompts --------------------------------------------------------------------------

    def layout(self, context: str) -> Any:
        """The protocol's prompt for one lm-eval context."""
        doc, question = split_context(context, self.question_sep)
        if self.protocol_name == "brackets":
            opts: dict[str, Any] = dict(self.defaults.prompt)
            if self.section_chars is not None:
                opts["max_chars"] = self.section_chars
            if not doc.strip():
                doc = "(the document is empty)"
        else:
            opts = {"thinking": self.thinking}
            if self.protocol_name == "da":
                opts.update(target=self.chunk_tokens, cap=self.chunk_tokens * 5 // 4)
        return self.protocol.build_prompt(self.tokenizer, doc, question, **opts)

    def _scored(self, result: Any) -> str:
        if self.output == "answer":
            return result.answer
        if self.output == "stripped":
            from .protocol.parser import strip_directives
            from .protocol.base import _DA_TAG

            return _DA_TAG.sub("", strip_directives(result.text)).strip()
        return result.text

    # -- lm-eval's interface --------------------------------------------------------------

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from tqdm.auto import tqdm

        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        settings: dict[str, tuple[list[str], int, dict[str, Any] | None]] = {}
        for i, req in enumerate(requests):
            gen = dict(req.args[1]) if len(req.args) > 1 and req.args[1] else {}
            key, setting = self._settings(gen)
            groups.setdefault(key, []).append(i)
            settings[key] = setting
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc="dac generate_until")
        try:
            for key, idx in groups.items():
                until, budget, sampling = settings[key]
                for s in range(0, len(idx), self.batch_size):
                    batch = idx[s:s + self.batch_size]
                    for i, text in zip(batch, self._generate(
                            [requests[i] for i in batch], until, budget, sampling)):
                        out[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(batch))
        finally:
            bar.close()
        return [o if o is not None else "" for o in out]

    def _settings(self, gen: dict[str, Any]) -> tuple[str, tuple[list[str], int, Any]]:
        until = gen.get("until") or []
        until = [until] if isinstance(until, str) else [str(u) for u in until]
        budget = max(int(gen.get("max_gen_toks") or self.max_gen_toks), self.min_gen_toks)
        for k in gen:
            if k not in KNOWN_GEN_KWARGS and k not in self._warned:
                self._warned.add(k)
                log.warning("dac: generation kwarg %r is ignored", k)
        sampling = {k: gen[k] for k in SAMPLING_KEYS if gen.get(k) is not None} or None
        key = json.dumps([until, budget, sampling], sort_keys=True, default=str)
        return key, (until, budget, sampling)

    def _generate(self, reqs: list[Any], until: list[str], budget: int,
                  sampling: dict[str, Any] | None) -> list[str]:
        layouts = [self.layout(r.args[0]) for r in reqs]
        t0 = time.perf_counter()
        results = self.engine.generate(
            layouts, policy=self.policy, config=self.plan, max_new_tokens=budget,
            bound_sections=self.bound_sections,
            sampling=sampling if sampling is not None else self.defaults.sampling)
        wall = (time.perf_counter() - t0) / len(reqs)
        texts = []
        for req, lay, res in zip(reqs, layouts, results):
            hit = None
            if self.until_scope == "generation":
                res, hit = truncate_result(res, self.tokenizer, until)
            scored, cut = cut_at_stops(self._scored(res), until)
            texts.append(scored)
            self._log(req, lay, res, scored, hit or cut, budget, wall)
        return texts

    def _log(self, req: Any, layout: Any, res: Any, scored: str, stop: str | None,
             budget: int, wall: float) -> None:
        from lm_eval.utils import hash_string

        rec = {"task": req.task_name, "doc_id": req.doc_id, "idx": req.idx,
               "prompt_hash": hash_string(req.args[0]),
               "protocol": self.protocol_name, "policy": self.policy_name,
               "sections": layout.num_sections, "prompt_tokens": layout.prompt_len,
               "generated_tokens": len(res.generated_ids), "max_gen_toks": budget,
               "stop": stop, "output": scored, "text": res.text,
               "wall_s": round(wall, 4), **res.stats()}
        self.records.append(rec)
        if self.stats_path is not None:
            self.stats_path.parent.mkdir(parents=True, exist_ok=True)
            with self.stats_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(
            "dac: loglikelihood requests (multiple_choice / loglikelihood tasks) are not "
            "supported: they score given text and read no generated directive, so under DAC "
            "they would be plain full attention. Run them with lm-eval's own "
            "--model hf --model_args pretrained=DIR, or pick generate_until tasks.")

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError(
            "dac: loglikelihood_rolling requests (perplexity tasks) are not supported: "
            "they read no generated directive; use --model hf for them.")

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        raise ValueError("dac: drop --apply_chat_template; the protocol renders the prompt "
                         "through the tokenizer's chat template itself")

    # -- what lm-eval records -------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Means of the per-sample accounting over every sample generated so far."""
        n = len(self.records)

        def mean(k: str) -> float | None:
            return round(sum(r[k] for r in self.records) / n, 3) if n else None

        return {"samples": n, "attended_tokens_mean": mean("attended_tokens"),
                "decode_steps_mean": mean("decode_steps"),
                "per_step_ratio_mean": mean("per_step_ratio"),
                "terminated_share": mean("terminated")}

    def get_model_info(self) -> dict[str, Any]:
        """Added by lm-eval to the results' ``config``."""
        from . import __version__

        return {"dac": {"version": __version__, "pretrained": self.pretrained,
                        "protocol": self.protocol_name, "policy": self.policy_name,
                        "output": self.output, "until_scope": self.until_scope,
                        "question_sep": self.question_sep,
                        "stats_path": str(self.stats_path) if self.stats_path else None,
                        **self.summary()}}


# -- the CLI ------------------------------------------------------------------------------

def _option(argv: Sequence[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a[len(n) + 1:]
    return None


def default_stats_path(output_path: str, now: float | None = None) -> Path:
    """Where per-sample stats go beside lm-eval's ``--output_path``: ``X.json`` gives
    ``X.dac_stats.jsonl``; a folder gives ``FOLDER/dac_stats_<time>.jsonl``."""
    p = Path(output_path)
    if p.suffix == ".json":
        return p.with_suffix(".dac_stats.jsonl")
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.localtime(now))
    return p / f"dac_stats_{stamp}.jsonl"


def main(argv: Sequence[str] | None = None) -> None:
    """``dac-lm-eval``: lm-eval's CLI with the ``dac`` model registered.

    With ``--output_path`` and no ``stats_path`` model argument (nor ``$DAC_LM_EVAL_STATS``),
    the per-sample stats go beside lm-eval's results (:func:`default_stats_path`)."""
    if not HAVE_LM_EVAL:
        raise SystemExit(MISSING)
    from lm_eval.__main__ import cli_evaluate

    argv = list(sys.argv[1:] if argv is None else argv)
    out = _option(argv, "--output_path", "-o")
    if out and STATS_ENV not in os.environ and not any("stats_path" in a for a in argv):
        os.environ[STATS_ENV] = str(default_stats_path(out))
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
