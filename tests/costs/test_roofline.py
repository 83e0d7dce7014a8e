"""The roofline model reproduces the paper's worked example and its two projections."""

import pytest

from dac.roofline import (HARDWARE, PAPER_MODELS, PAPER_TRACES, ModelCosts, count_parameters,
                          decode_time, model_costs)


def test_gemma_vanilla_worked_example():
    # appendix C.8: 22.9 + 196.5 + 49.7 = 269.1 ms
    steps, attended = PAPER_TRACES["gemma-4-31b"]["vanilla"]
    t = decode_time(PAPER_MODELS["gemma-4-31b"], steps, attended, "b200")
    assert t.matmul_s * 1e3 == pytest.approx(22.9, abs=0.05)
    assert t.global_s * 1e3 == pytest.approx(196.5, abs=0.05)
    assert t.local_s * 1e3 == pytest.approx(49.7, abs=0.05)
    assert t.total_s * 1e3 == pytest.approx(269.1, abs=0.1)


@pytest.mark.parametrize("model, ratio", [("gemma-4-31b", 0.71), ("qwen-3.6-27b", 0.77)])
def test_paper_projection(model, ratio):
    m = PAPER_MODELS[model]
    da = decode_time(m, *PAPER_TRACES[model]["da"])
    vanilla = decode_time(m, *PAPER_TRACES[model]["vanilla"])
    assert da.total_s / vanilla.total_s == pytest.approx(ratio, abs=0.006)


def test_global_share_of_vanilla():
    # "the global read is 73% of decode time on Gemma and 86% on Qwen"
    for model, share in (("gemma-4-31b", 0.73), ("qwen-3.6-27b", 0.86)):
        t = decode_time(PAPER_MODELS[model], *PAPER_TRACES[model]["vanilla"])
        assert t.global_s / t.total_s == pytest.approx(share, abs=0.006)


def test_hardware_and_bad_input():
    m = ModelCosts("m", 1e9, 1000, 1e6)
    assert decode_time(m, 10, 100, "h200").total_s > decode_time(m, 10, 100, "b200").total_s
    with pytest.raises(ValueError):
        decode_time(m, -1, 0)
    with pytest.raises(KeyError):
        decode_time(m, 1, 1, "tpu9")
    assert set(HARDWARE) >= {"b200", "h200", "h100"}


def test_model_costs_from_a_directory(tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(
        '{"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, '
        '"hidden_size": 64}')
    save_file({"a": torch.zeros(3, 5), "b": torch.zeros(7)}, str(tmp_path / "model.safetensors"))
    assert count_parameters(tmp_path) == 22
    c = model_costs(tmp_path)
    assert c.params == 22 and c.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2
    with pytest.raises(FileNotFoundError):
        count_parameters(tmp_path / "nothing")
