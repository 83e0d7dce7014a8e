"""``dac eval --engine fast`` on a GPU (CUDA graphs, compiled FlexAttention) writes the
reference engine's records. Skipped without a GPU (CI has none): run it on a machine with one.
"""

from __future__ import annotations

import pytest
import torch

from dac.models import tiny_model
from tests.eval.engine_runs import assert_same_records, eval_cells

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

#: Quest selecting 30% of the context per head, in every layer (no dense layer)
POLICIES = ["full", "dac", "streaming", "quest:budget=0.3,dense_layers=0"]
TASKS = ["passkey", "chained_facts", "tail_last"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("tiny")
    # float32 weights (loaded as such on cuda): both engines' kernels agree to float32
    # rounding, far below the gaps between a random model's top logits
    tiny_model("llama", vocab_size=len(tokenizer), seed=1).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_fast_engine_on_a_gpu_writes_the_reference_engines_records(model_dir, tmp_path):
    """Same outputs, answers, scores, directives, kept blocks, per-step reads and evidence
    recall for every policy, Quest included. Quest's per-step evidence recall is not compared
    (the fast engine selects its blocks per head on the device and does not measure it), and
    its KV reads are compared with a tolerance: a mean over layers and KV heads summed in
    float32 on the device may differ from the reference engine's in the last bits."""
    ref = eval_cells(model_dir, tmp_path / "hf", "hf", device="cuda", tasks=TASKS,
                     policies=POLICIES, new_tokens=16)
    fast = eval_cells(model_dir, tmp_path / "fast", "fast", device="cuda", tasks=TASKS,
                      policies=POLICIES, new_tokens=16)
    assert len(ref) == len(TASKS) * len(POLICIES)
    assert_same_records(fast, ref)
    quest = [r for name, rs in fast.items() if "quest" in name for r in rs]
    assert quest and all(r["kv"]["fraction"] < 1.0 for r in quest)
