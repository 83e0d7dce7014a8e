"""Worker side of the plugin: per-request trackers and the plan of each decode step.

A thin wrapper around the model runner's ``_build_attention_metadata`` (V1 runner; the CPU
runner inherits it) computes, for every DAC decode row of the batch, the kept blocks of this
step and publishes them in a context variable for the attention metadata builders of
:mod:`.backends`, which compact those rows' block tables. Rows are matched to requests through
``runner.input_batch.req_ids`` (the metadata itself carries no request id). Each rank of a
tensor/pipeline-parallel engine parses the same token ids, so all ranks apply the same plan.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any

from .options import DACOptionError, is_dac_request, parse_options
from .support import unsupported_reasons
from ...runtime import eos_token_ids
from .tracker import RequestTracker

logger = logging.getLogger("dac.vllm")


@dataclass(frozen=True)
class RowPlan:
    """The plan of one decode row: kept DAC blocks over ``length`` tokens."""

    blocks: list[int]
    block_size: int
    length: int
    req_id: str


#: row index -> plan, for the batch whose attention metadata is being built
CURRENT_PLANS: contextvars.ContextVar[dict[int, RowPlan] | None] = contextvars.ContextVar(
    "dac_current_plans", default=None)


def load_tokenizer(model_config: Any) -> Any:
    """The Hugging Face tokenizer of the served model (the parser needs its detokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_config.tokenizer, trust_remote_code=getattr(model_config, "trust_remote_code", False),
        revision=getattr(model_config, "tokenizer_revision", None))


def load_eos(model_config: Any, tokenizer: Any) -> set[int]:
    gen = None
    try:
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(model_config.model)
    except Exception:  # noqa: BLE001 - no generation_config.json is fine
        gen = None
    return eos_token_ids(tokenizer, gen, getattr(model_config, "hf_config", None))


@dataclass
class GroupLayout:
    """Which attention layers DAC masks in this engine (from its KV-cache groups)."""

    global_layers: list[str]  # full-attention decoder layers (no window of their own)
    compacted: list[str]  # layers whose metadata builder compacts DAC rows
    kernel_block: int  # kernel block size of the compacted groups (their lcm)
    reasons: list[str]


def inspect_layout(runner: Any) -> GroupLayout:
    """Classify the runner's attention layers and metadata builders.

    Every full-attention layer must be served by a builder that compacts (a group of
    full-attention layers only, :func:`.groups.compacts`); sliding-window layers keep their
    own groups, built as vLLM builds them, and linear-attention (Mamba-style) groups have
    builders DAC never touches."""
    import math

    from vllm.config import get_layers_from_vllm_config
    from vllm.model_executor.layers.attention import Attention

    from .groups import is_global_layer

    layers = get_layers_from_vllm_config(runner.vllm_config, Attention)
    glob = [n for n, lay in layers.items() if is_global_layer(lay)]
    compacted: list[str] = []
    kernel = 0
    for groups in getattr(runner, "attn_groups", None) or []:
        for group in groups:
            builders = getattr(group, "metadata_builders", None) or []
            # a DAC builder (.backends.DACBuilderMixin) says whether it compacts
            if builders and all(getattr(b, "dac_compacts", False) for b in builders):
                compacted.extend(group.layer_names)
                kb = int(builders[0].kv_cache_spec.block_size)
                kernel = kb if not kernel else kernel * kb // math.gcd(kernel, kb)
    reasons: list[str] = []
    if not glob:
        reasons.append("the model has no full-attention layer (every layer has a sliding "
                       "window): nothing to mask")
    missing = [n for n in glob if n not in set(compacted)]
    if glob and missing:
        reasons.append(f"{len(missing)} full-attention layer(s) (e.g. {missing[0]}) have no "
                       "block table of their own that DAC can compact (a KV-cache group shared "
                       "with sliding-window layers, as with the hybrid KV-cache manager off, or "
                       "an attention backend without a DAC builder)")
    if any(getattr(layers[n], "has_sink", False) for n in glob):
        reasons.append("the full-attention layers have learned attention sinks (gpt-oss): not "
                       "supported by the vLLM plugin")
    return GroupLayout(glob, compacted, kernel, reasons)


class WorkerState:
    """DAC state of one model runner (one per worker process and rank)."""

    def __init__(self, runner: Any):
        self.runner = runner
        self.trackers: dict[str, RequestTracker] = {}
        self.disabled: dict[str, str] = {}  # req_id -> reason DAC is off for it
        self._tokenizer: Any = None
        self._eos: set[int] | None = None
        self._engine_reasons: list[str] | None = None
        # manager block size: a multiple of the kernel block size, so DAC blocks that are
        # multiples of it map onto whole kernel blocks (refined by the global groups' kernel
        # block size once the engine is inspected)
        self.block_size = int(runner.vllm_config.cache_config.block_size)

    @property
    def engine_reasons(self) -> list[str]:
        """Why this engine cannot serve DAC exactly (computed at the first DAC request, when
        the KV-cache groups and their metadata builders exist)."""
        if self._engine_reasons is None:
            reasons = unsupported_reasons(self.runner.vllm_config)
            layout = inspect_layout(self.runner)
            reasons.extend(layout.reasons)
            if layout.kernel_block:
                self.block_size = layout.kernel_block
            self.layout = layout
            self._engine_reasons = reasons
        return self._engine_reasons

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.runner.model_config)
            self._eos = load_eos(self.runner.model_config, self._tokenizer)
        return self._tokenizer

    def _tracker(self, req_id: str, req_state: Any) -> RequestTracker | None:
        tr = self.trackers.get(req_id)
        if tr is not None or req_id in self.disabled:
            return tr
        extra = getattr(req_state.sampling_params, "extra_args", None)
        try:
            if self.engine_reasons:
                raise DACOptionError("; ".join(self.engine_reasons))
            opts = parse_options(extra, kernel_block_size=self.block_size)
            assert opts is not None
            layout = opts.layout(list(req_state.prompt_token_ids or []), self.tokenizer)
        except (DACOptionError, ValueError) as e:
            self.disabled[req_id] = str(e)
            logger.warning("DAC disabled for request %s (full attention): %s", req_id, e)
            return None
        tr = RequestTracker(opts, layout, self.tokenizer, set(self._eos or ()), record=False)
        self.trackers[req_id] = tr
        return tr

    def _row_plan(self, i: int, req_id: str, st: Any) -> RowPlan | None:
        sp = getattr(st, "sampling_params", None)
        if st is None or sp is None:
            return None
        try:
            if not is_dac_request(getattr(sp, "extra_args", None)):
                return None
        except DACOptionError as e:
            self.disabled[req_id] = str(e)
            logger.warning("DAC disabled for request %s (full attention): %s", req_id, e)
            return None
        tr = self._tracker(req_id, st)
        if tr is None:
            return None
        batch = self.runner.input_batch
        computed = int(batch.num_computed_tokens_cpu[i])
        if computed < tr.prompt_len:
            return None  # (chunked) prefill: ordinary causal attention
        out_ids = st.output_token_ids
        t = computed - tr.prompt_len  # index of the generated token processed now
        if t + 1 < tr.fed:
            if tr.masked and not getattr(tr, "warned_recompute", False):
                tr.warned_recompute = True  # type: ignore[attr-defined]
                logger.warning(
                    "DAC request %s was preempted and is recomputed: the KV of its generated "
                    "tokens is rebuilt with full attention, so its later tokens may differ "
                    "from an uninterrupted DAC run", req_id)
            return None
        if len(out_ids) != t + 1 or any(x < 0 for x in out_ids[-1:]):
            return None  # not a plain one-token decode step (placeholder or recompute chunk)
        blocks = tr.step(out_ids, computed + 1)
        return RowPlan(blocks, tr.options.config.block_size, computed + 1, req_id)

    def plans(self, num_reqs: int) -> dict[int, RowPlan]:
        r = self.runner
        live = r.requests
        for gone in [k for k in self.trackers if k not in live]:
            del self.trackers[gone]
        for gone in [k for k in self.disabled if k not in live]:
            del self.disabled[gone]
        out: dict[int, RowPlan] = {}
        batch = r.input_batch
        for i, req_id in enumerate(batch.req_ids[:num_reqs]):
            if req_id is None or req_id in self.disabled:
                continue
            try:
                plan = self._row_plan(i, req_id, live.get(req_id))
            except Exception as e:  # noqa: BLE001 - one bad request must not stop the engine
                self.disabled[req_id] = repr(e)
                self.trackers.pop(req_id, None)
                logger.exception("DAC disabled for request %s (full attention) after an error",
                                 req_id)
                continue
            if plan is not None:
                out[i] = plan
        return out


_STATE_ATTR = "_dac_worker_state"


def install_runner_hook() -> None:
    """Wrap the V1 model runner's metadata build (idempotent; called in worker processes)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    orig = GPUModelRunner._build_attention_metadata
    if getattr(orig, "_dac_wrapped", False):
        return

    def _build_attention_metadata(self: Any, *args: Any, **kwargs: Any):
        if kwargs.get("for_cudagraph_capture"):
            return orig(self, *args, **kwargs)
        num_reqs = kwargs.get("num_reqs", args[1] if len(args) > 1 else 0)
        state = getattr(self, _STATE_ATTR, None)
        if state is None:
            state = WorkerState(self)
            setattr(self, _STATE_ATTR, state)
        plans = state.plans(int(num_reqs)) if num_reqs else {}
        token = CURRENT_PLANS.set(plans or None)
        try:
            return orig(self, *args, **kwargs)
        finally:
            CURRENT_PLANS.reset(token)

    _build_attention_metadata._dac_wrapped = True  # type: ignore[attr-defined]
    GPUModelRunner._build_attention_metadata = _build_attention_metadata
