"""`dac model-info`: the cost constants of the paper's table, from the published shapes."""

import json
from pathlib import Path

import pytest

from dac.cli import main
from dac.costs import cost_constants

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


@pytest.mark.parametrize("name, layers, per_token, local_mb", [
    ("gemma-4-31b", 10, 81_920, 838.9),  # 50 sliding layers, window 1024
    ("qwen-3.6-27b", 16, 65_536, 78.45),  # 48 Gated DeltaNet layers
])
def test_the_papers_constants(capsys, name, layers, per_token, local_mb):
    assert main(["model-info", str(CONFIGS / f"{name}.json"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["global_layers"] == layers
    assert info["global_kv_bytes_per_token"] == per_token
    assert info["local_bytes_per_step"] / 1e6 == pytest.approx(local_mb, abs=0.05)  # as printed
    assert main(["model-info", str(CONFIGS / f"{name}.json")]) == 0
    assert f"{per_token:,} B" in capsys.readouterr().out


def test_a_full_attention_model_reads_nothing_fixed():
    info = cost_constants({"num_hidden_layers": 32, "num_attention_heads": 32,
                           "num_key_value_heads": 8, "hidden_size": 4096})
    assert info["global_kv_bytes_per_token"] == 32 * 2 * 8 * 128 * 2
    assert info["local_bytes_per_step"] == 0


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["model-info", str(tmp_path / "missing")]) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 2, "num_attention_heads": 2, '
                                          '"hidden_size": 8, "layer_types": ["conv", "conv"]}')
    assert main(["model-info", str(tmp_path)]) == 2
    assert "no cost model" in capsys.readouterr().err
