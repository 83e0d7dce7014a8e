"""``VLLMEngine``: the :class:`dac.engines.base.Engine` interface on a vLLM ``LLM``.

Each layout becomes one request: its prompt token ids, greedy sampling, and the DAC options plus
its section spans in ``SamplingParams.extra_args`` (:func:`.options.to_extra_args`). The worker
applies the plan; the directive timeline and KV accounting of the result are a replay of the
same tracker over the returned token ids (:func:`.tracker.replay`).

The DAC block size of a request must be a multiple of the engine's KV block size: build the
engine with ``block_size`` equal to the planner's (the default here, 64).

Section-bounded decoding (``bound_sections``, on by default, policies that read directives):
the directive tokens naming a section the prompt lacks are left out of the request's
``SamplingParams.allowed_token_ids`` (V1 masks the rest with -inf in the sampler, on CPU as on
GPU), the same tokens the Hugging Face engine bans (:mod:`dac.protocol.constraint`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ...planning.blocks import PlanConfig
from ...planning import Policy, get_policy
from ...protocol.constraint import section_bans
from ...protocol.context import PromptLayout, Span
from ...runtime import GenerationResult, Sampling, check_fits
from .options import DACOptionError, bounded_allowed_ids, parse_options, to_extra_args
from .support import unsupported_reasons
from .tracker import eos_token_ids, replay

#: engine arguments DAC needs (see :mod:`.support`); callers may add others
DAC_ENGINE_ARGS: dict[str, Any] = {
    "enable_prefix_caching": False,
    "async_scheduling": False,
}


class VLLMEngine:
    """Generate with vLLM + the DAC plugin; results are :class:`GenerationResult` objects."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, llm: Any = None, tokenizer: Any = None,
                 block_size: int = 64, **llm_kwargs: Any):
        if llm is None:
            if model is None:
                raise ValueError("VLLMEngine needs a model directory or an LLM")
            from vllm import LLM

            kwargs = dict(DAC_ENGINE_ARGS, block_size=block_size, enforce_eager=True,
                          gpu_memory_utilization=0.25)
            kwargs.update(llm_kwargs)
            llm = LLM(model=str(model), **kwargs)
        self.llm = llm
        vcfg = llm.llm_engine.vllm_config
        reasons = unsupported_reasons(vcfg)
        if reasons:
            raise ValueError("this vLLM engine cannot run DAC exactly: " + "; ".join(reasons))
        self.block_size = int(vcfg.cache_config.block_size)
        self.max_model_len = int(vcfg.model_config.max_model_len)
        self.vocab_size = int(vcfg.model_config.get_vocab_size())
        if tokenizer is None:
            from .worker import load_tokenizer

            tokenizer = load_tokenizer(vcfg.model_config)
        self.tokenizer = tokenizer
        from .worker import load_eos

        self.eos_ids = load_eos(vcfg.model_config, tokenizer)
        from ...models import load_defaults

        path = str(vcfg.model_config.model)
        self.defaults = load_defaults(path) if os.path.isdir(path) else None
        from ...costs import cost_constants

        try:  # the model's cost constants, for each result's byte accounting
            self.costs: dict[str, Any] | None = cost_constants(
                vcfg.model_config.hf_config.to_dict())
        except (ValueError, KeyError, TypeError, AttributeError):
            self.costs = None

    def sampling_params(self, layout: PromptLayout, *, policy: str | Policy, config: PlanConfig,
                        max_new_tokens: int, bound_sections: bool = True, **kwargs: Any) -> Any:
        """Greedy ``SamplingParams`` carrying the DAC options of one request (and, for a policy
        that reads directives, the section bound as ``allowed_token_ids``)."""
        from vllm import SamplingParams

        extra = to_extra_args(layout, config, policy, bound_sections)
        parse_options(extra, kernel_block_size=self.block_size)  # fail here, not in the worker
        extra.update(kwargs.pop("extra_args", None) or {})
        bans = section_bans(self.tokenizer, [layout],
                            enabled=bound_sections and get_policy(policy).reads_directives)
        if bans is not None:
            allowed = bounded_allowed_ids(bans[0], self.vocab_size,
                                          kwargs.get("allowed_token_ids"))
            if allowed is not None:
                kwargs["allowed_token_ids"] = allowed
        kwargs.setdefault("temperature", 0.0)  # greedy unless the caller says otherwise
        return SamplingParams(max_tokens=max_new_tokens, extra_args=extra, **kwargs)

    def generate(self, layouts: list[PromptLayout], *, policy: str | Policy = "dac",
                 config: PlanConfig | None = None, max_new_tokens: int = 64,
                 evidence: list[list[Span]] | None = None, use_tqdm: bool = False,
                 bound_sections: bool = True,
                 sampling: Sampling | Mapping[str, Any] | None = None,
                 **params: Any) -> list[GenerationResult]:
        """One :class:`GenerationResult` per layout. ``config`` / ``sampling`` default to the
        model's own (its ``dac_config.json`` / ``generation_config.json``; greedy when they
        say nothing); ``params``: further ``SamplingParams`` fields, which win;
        ``bound_sections`` as in the Hugging Face engine's ``generate``."""
        d = self.defaults
        if config is None:
            own = d.plan if d is not None else None
            config = own if own is not None and own.block_size % self.block_size == 0 \
                else PlanConfig(block_size=self.block_size)
        if sampling is None:
            sampling = d.sampling if d is not None else None
        sampling = {**Sampling.of(sampling).vllm_kwargs(), **params}
        policy = get_policy(policy)
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if config.block_size % self.block_size:
            raise DACOptionError(f"block size {config.block_size} must be a multiple of the "
                                 f"engine's KV block size {self.block_size}")
        evidence = evidence or [[] for _ in layouts]
        if len(evidence) != len(layouts):
            raise ValueError("evidence must have one entry per layout")
        check_fits(layouts, max_new_tokens, self.max_model_len,
                   "the engine's limit of {limit} positions")
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(lay.input_ids)) for lay in layouts]
        params = [self.sampling_params(lay, policy=policy, config=config,
                                       max_new_tokens=max_new_tokens,
                                       bound_sections=bound_sections, **dict(sampling))
                  for lay in layouts]
        outs = self.llm.generate(prompts, params, use_tqdm=use_tqdm)
        results = []
        for out, lay, ev, sp in zip(outs, layouts, evidence, params):
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            opts = parse_options(sp.extra_args, kernel_block_size=self.block_size)
            assert opts is not None
            tr, _ = replay(opts, lay, self.tokenizer, ids, self.eos_ids, ev)
            res = tr.result(token_ids=ids, logprobs=_sampled_logprobs(comp))
            res.costs = self.costs
            results.append(res)
        return results


def _sampled_logprobs(comp: Any) -> list[float] | None:
    """Log-probability of each sampled token (when the request asked for logprobs)."""
    if not comp.logprobs:
        return None
    return [float(step[tok].logprob) for tok, step in zip(comp.token_ids, comp.logprobs)]


__all__ = ["DAC_ENGINE_ARGS", "VLLMEngine", "eos_token_ids"]
