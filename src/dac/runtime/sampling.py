"""How the next token is chosen, the same in every engine: greedy, or sampled with
temperature, top-p, top-k and a presence penalty (the knobs the paper's evaluation sets).

A model's own choice comes from its directory (:func:`dac.models.load_defaults`:
``generation_config.json``, then ``dac_config.json``'s ``"generation"``); greedy is the
default everywhere else, and the tests'. Each engine translates a :class:`Sampling` into its
own terms: ``model.generate`` keyword arguments (:meth:`Sampling.hf_kwargs`), vLLM
``SamplingParams`` fields (:meth:`Sampling.vllm_kwargs`), or the fast engine's own choice on
the device (:meth:`Sampling.choose`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Sampling:
    """Greedy unless ``do_sample``; the other fields apply when sampling."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    presence_penalty: float = 0.0  # subtracted once from each token already generated
    seed: int | None = None  # a fixed seed makes sampled runs repeatable

    def __post_init__(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be true or false, got {self.do_sample!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if not -2 <= self.presence_penalty <= 2:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")

    @classmethod
    def of(cls, value: Sampling | Mapping[str, Any] | None) -> Sampling:
        """A Sampling from itself, a mapping of its fields (``temperature`` 0 means greedy,
        unknown keys are refused), or ``None`` (greedy)."""
        if value is None:
            return GREEDY
        if isinstance(value, Sampling):
            return value
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown sampling option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}")
        d = {k: v for k, v in value.items() if v is not None}
        if d.get("temperature") == 0:  # the OpenAI / vLLM spelling of greedy
            d.pop("temperature")
            d["do_sample"] = False
        elif "do_sample" not in d and any(k in d for k in ("temperature", "top_p", "top_k")):
            d["do_sample"] = True
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"do_sample": False}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v != getattr(GREEDY, k) or k == "do_sample"}

    # -- per engine --------------------------------------------------------------------------
    def hf_kwargs(self, prompt_width: int) -> dict[str, Any]:
        """``model.generate`` keyword arguments (a presence penalty as a logits processor
        over the generated part, which starts at ``prompt_width``)."""
        if not self.do_sample:
            return {"do_sample": False}
        out: dict[str, Any] = {"do_sample": True, "temperature": self.temperature,
                               "top_p": self.top_p, "top_k": self.top_k or None}
        if self.presence_penalty:
            out["logits_processor"] = [PresencePenalty(self.presence_penalty, prompt_width)]
        return out

    def vllm_kwargs(self) -> dict[str, Any]:
        """vLLM ``SamplingParams`` fields."""
        if not self.do_sample:
            return {"temperature": 0.0}
        return {"temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k or -1, "presence_penalty": self.presence_penalty,
                "seed": self.seed}

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        if not self.do_sample:
            return None
        g = torch.Generator(device=device)
        if self.seed is not None:
            g.manual_seed(self.seed)
        else:
            g.seed()
        return g

    def choose(self, logits: torch.Tensor, generated: Sequence[Sequence[int]],
               generator: torch.Generator | None = None) -> list[int]:
        """One token per row of ``logits [B, V]`` (``generated``: each row's tokens so far,
        for the presence penalty)."""
        if not self.do_sample:
            return logits.argmax(-1).tolist()
        scores = logits.float()
        if self.presence_penalty:
            scores = apply_presence(scores, generated, self.presence_penalty)
        scores = scores / self.temperature
        if self.top_k:
            kth = scores.topk(min(self.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1:
            srt, idx = scores.sort(dim=-1, descending=True)
            cum = srt.softmax(-1).cumsum(-1)
            drop = cum - srt.softmax(-1) > self.top_p  # keep the smallest set reaching top_p
            scores = scores.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
        probs = scores.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).flatten().tolist()


GREEDY = Sampling()


def apply_presence(scores: torch.Tensor, generated: Sequence[Sequence[int]],
                   penalty: float) -> torch.Tensor:
    """``scores`` less ``penalty`` for each token a row has generated (once per token)."""
    scores = scores.clone()
    for b, ids in enumerate(generated):
        seen = sorted({int(t) for t in ids if 0 <= int(t) < scores.shape[-1]})
        if seen:
            scores[b, seen] -= penalty
    return scores


class PresencePenalty:
    """A transformers logits processor: the presence penalty over the generated tokens."""

    def __init__(self, penalty: float, prompt_width: int):
        self.penalty, self.width = penalty, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        return apply_presence(scores, input_ids[:, self.width:].tolist(), self.penalty)
