"""A ``dac serve`` subprocess on loopback with a tiny model (one for all of tests/serve)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

BLOCK = 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    template = log.parent / "chat.jinja"  # the tiny tokenizer has no chat template
    template.write_text("{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}Answer:")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    cmd = [sys.executable, "-m", "dac.cli", "serve", "--model", str(served_model),
           "--port", str(port), "--block-size", str(BLOCK), "--max-model-len", "2048",
           "--dtype", "float32", "--", "--max-num-seqs", "32", "--seed", "0",
           "--chat-template", str(template),
           "--logits-processors", "dac.engines.vllm.forcing:ForcedTokensLogitsProcessor"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dac serve exited ({proc.returncode}):\n"
                                   + log.read_text()[-3000:])
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dac serve did not start in 300 s:\n" + log.read_text()[-3000:])
            time.sleep(2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
