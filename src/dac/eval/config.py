"""The configuration of an evaluation run, and the parsing of its command-line lists."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..planning.blocks import PlanConfig
from ..planning import parse_policy
from .arms import NAMED_ARMS, PAPER_ARMS, check_arm
from ..tasks import TASKS, resolve_tasks

SCHEMA = "dac.eval.config/1"
#: the paper's context budget: contexts over 244K tokens are dropped
DEFAULT_BUDGET = 244 * 1024
#: answer budget of a source's example (the suite's tasks have their own)
SOURCE_NEW_TOKENS = 1024
_LEN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(text: str) -> int:
    """``"4k"`` -> 4096, ``"1.5k"`` -> 1536, ``"1m"`` -> 1048576, ``"700"`` -> 700."""
    m = _LEN.match(str(text))
    if not m:
        raise ValueError(f"bad length {text!r}; use e.g. 512, 4k, 128k")
    mult = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    n = int(float(m.group(1)) * mult)
    if n < 64:
        raise ValueError(f"length {text!r} is below 64 tokens")
    return n


def parse_lengths(text: str | list[Any]) -> list[int]:
    items = text if isinstance(text, list) else str(text).split(",")
    out = []
    for it in items:
        if str(it).strip():
            n = parse_length(str(it))
            if n not in out:
                out.append(n)
    if not out:
        raise ValueError("no length given")
    return out


def parse_policies(text: str | list[str]) -> list[str]:
    """Policy specs (strings :func:`dac.planning.parse_policy` accepts), validated, in order.

    Options may also be joined by ``;`` or ``+``: ``quest:budget=0.1+dense_layers=0``.
    """
    items = text if isinstance(text, list) else _split_policies(str(text))
    out = []
    for it in items:
        spec = it.strip()
        if not spec:
            continue
        if spec.lower() in NAMED_ARMS:
            spec = spec.lower()
        else:
            proto, slash, policy = spec.rpartition("/") if "/" in spec else ("", "", spec)
            name, _, opts = policy.partition(":")
            policy = name.strip().lower() + (":" + opts.replace("+", ",").replace(";", ",")
                                             if opts else "")
            parse_policy(policy)  # raises ValueError with the accepted names
            spec = f"{proto.strip().lower()}/{policy}" if slash else policy
            check_arm(spec)
        if spec not in out:
            out.append(spec)
    if not out:
        raise ValueError("no policy given")
    return out


def parse_arms(text: str | list[str]) -> list[str]:
    """``--arms``: named arms (``vanilla,da-nm,da``; ``paper`` is those three) and
    ``PROTOCOL/POLICY`` pairs (:mod:`dac.eval.arms`)."""
    items = text if isinstance(text, list) else _split_policies(str(text))
    items = [a for it in items for a in (PAPER_ARMS if it.strip().lower() == "paper" else [it])]
    return parse_policies(list(items))


def _split_policies(text: str) -> list[str]:
    """Split on commas that start a new policy (``quest:budget=0.2,dense_layers=0,dac``)."""
    parts: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if parts and ":" in parts[-1] and "=" in piece and ":" not in piece:
            parts[-1] += "," + piece  # an option of the previous policy
        elif piece:
            parts.append(piece)
    return parts


def policy_slug(spec: str) -> str:
    """A file-name-safe form of a policy spec."""
    return re.sub(r"[^A-Za-z0-9.=_-]+", "-", spec).strip("-")


@dataclass
class EvalConfig:
    """Everything that decides a run's results (saved as ``config.json``)."""

    model: str
    tasks: list[str]
    lengths: list[int]
    policies: list[str]
    samples: int = 10
    seed: int = 0  # samples use seeds seed, seed+1, ...
    batch_size: int = 4
    max_new_tokens: int | None = None  # None: each task's own budget
    engine: str = "hf"
    plan: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(PlanConfig()))
    #: :func:`dac.protocol.build_prompt` options the model was trained with
    #: (:func:`dac.models.load_prompt_options`); {} is the protocol's default prompt
    prompt: dict[str, Any] = field(default_factory=dict)
    #: :func:`dac.models.weights_fingerprint` of the model directory ("" for none): a run is
    #: not resumed with other weights at the same path
    weights: str = ""
    #: section-bounded decoding (:mod:`dac.protocol.constraint`); ``--no-bound-sections``
    bound_sections: bool = True
    #: the attention protocol of the prompts (:mod:`dac.protocol.base`): brackets, da, vanilla
    protocol: str = "brackets"
    #: paper sources (:mod:`dac.eval.sources`): name -> data file ("": a RULER source
    #: generated offline at each of ``lengths``)
    sources: dict[str, str] = field(default_factory=dict)
    #: the sources' selection: contexts over this many tokens (the evaluated model's
    #: tokenizer) are dropped before drawing ``samples`` examples with ``seed``
    budget: int = DEFAULT_BUDGET
    #: how tokens are chosen (:class:`dac.runtime.Sampling` as a dict; {}: greedy)
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = resolve_tasks(self.tasks) if (self.tasks or not self.sources) else []
        if self.sources:
            from .sources import SOURCES

            unknown = [s for s in self.sources if s not in SOURCES]
            if unknown:
                raise ValueError(f"unknown source {unknown[0]!r}; see dac eval --list-sources")
        if self.budget < 64:
            raise ValueError("--budget must be at least 64 tokens")
        self.lengths = parse_lengths(self.lengths)
        self.policies = parse_policies(self.policies)
        if self.samples < 1:
            raise ValueError("--samples must be at least 1")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("--max-new-tokens must be at least 1")
        PlanConfig(**self.plan)  # validates
        from ..models import PROMPT_OPTIONS

        if set(self.prompt) - set(PROMPT_OPTIONS):
            raise ValueError(f"unknown prompt options: {sorted(set(self.prompt))}")
        from ..protocol.base import get_protocol

        get_protocol(self.protocol)  # a ValueError naming the known ones
        from ..runtime import Sampling

        self.sampling = Sampling.of(self.sampling or None).to_dict()

    @property
    def plan_config(self) -> PlanConfig:
        return PlanConfig(**self.plan)

    def source_lengths(self, name: str) -> list[int]:
        """A source's cell lengths: the budget for a data file, the run's lengths for a RULER
        source generated offline (no data file)."""
        return [self.budget] if self.sources[name] else list(self.lengths)

    def new_tokens(self, task: str) -> int:
        spec = TASKS.get(task)
        return self.max_new_tokens or (spec.max_new_tokens if spec else SOURCE_NEW_TOKENS)

    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.samples))

    def identity(self) -> dict[str, Any]:
        """The fields a finished cell's results depend on (besides its task, length, policy)."""
        return {"model": self.model, "samples": self.samples, "seed": self.seed,
                "max_new_tokens": self.max_new_tokens, "engine": self.engine, "plan": self.plan,
                "bound_sections": self.bound_sections,
                **({"prompt": self.prompt} if self.prompt else {}),
                **({"protocol": self.protocol} if self.protocol != "brackets" else {}),
                **({"budget": self.budget} if self.budget != DEFAULT_BUDGET else {}),
                **({"sampling": self.sampling} if self.sampling.get("do_sample") else {}),
                **({"weights": self.weights} if self.weights else {})}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        # a run written before section-bounded decoding existed decoded without it
        return cls(**{"bound_sections": False, **{k: v for k, v in d.items() if k in names}})
