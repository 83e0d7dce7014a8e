"""A ``dac serve`` subprocess on loopback with a tiny model (one for all of tests/serve)."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import free_port, serve_subprocess

BLOCK = 32


@pytest.fixture(scope="package")
def served_model(tmp_path_factory):
    from dac.models import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("serve-model")
    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), hidden=128, heads=2, kv_heads=1,
                       head_dim=64, seed=5)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="package")
def server(served_model, tmp_path_factory):
    """Base URL of a running server; stopped (process group) when tests/serve ends."""
    pytest.importorskip("vllm")
    pytest.importorskip("httpx")
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    template = log.parent / "chat.jinja"  # the tiny tokenizer has no chat template
    template.write_text("{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}Answer:")
    cmd = [sys.executable, "-m", "dac.cli", "serve", "--model", str(served_model),
           "--port", str(port), "--block-size", str(BLOCK), "--max-model-len", "2048",
           "--dtype", "float32", "--", "--max-num-seqs", "32", "--seed", "0",
           "--chat-template", str(template),
           "--logits-processors", "dac.engines.vllm.forcing:ForcedTokensLogitsProcessor"]
    yield from serve_subprocess(cmd, port, log)
