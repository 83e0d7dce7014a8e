"""``dac serve`` argument handling and the middleware's option merging (no server)."""

from __future__ import annotations

import pytest

from dac.cli import main
from dac.engines.vllm.options import DACOptionError
from dac.serve.middleware import merge_options


def test_serve_refuses_bad_arguments(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert main(["serve", "--model", str(tmp_path), "--", "--enable-prefix-caching"]) == 2
    assert "cannot be combined with DAC" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--block-size", "0"]) == 2


def test_vllm_argv_forces_dac_settings(tmp_path):
    from argparse import Namespace

    from dac.serve.commands import vllm_argv

    (tmp_path / "config.json").write_text("{}")
    args = Namespace(model=str(tmp_path), host="127.0.0.1", port=8001, block_size=64,
                     max_model_len=None, dtype="auto", gpu_memory_utilization=None,
                     served_model_name=None, vllm_args=["--", "--max-num-seqs", "4"])
    argv = vllm_argv(args)
    for flag in ("--no-enable-prefix-caching", "--no-async-scheduling", "--enforce-eager"):
        assert flag in argv
    assert argv[argv.index("--middleware") + 1] == "dac.serve.middleware.DACMiddleware"
    assert argv[-2:] == ["--max-num-seqs", "4"]


def test_merge_options():
    assert merge_options({"dac": {"window": 8, "dac_sink_tokens": 0}}) == \
        {"dac": 1, "dac_window": 8, "dac_sink_tokens": 0}
    assert merge_options({"dac": False, "vllm_xargs": {"x": 1}}) == {"x": 1, "dac": 0}
    with pytest.raises(DACOptionError):
        merge_options({"vllm_xargs": [1]})
