"""Test helpers: make a random model 'write' chosen text, so directives come from generation."""

from __future__ import annotations

from transformers import LogitsProcessorList

from dac.engines.hf.forcing import ForceText

__all__ = ["ForceText", "IdsTokenizer", "forcing"]


class IdsTokenizer:
    """A tokenizer stand-in for tests that read logits and caches, not words: ids are their
    own text, and there is no EOS."""

    eos_token_id = None
    pad_token_id = 0

    def decode(self, ids, **kwargs):
        return " ".join(map(str, ids))

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


def forcing(tokenizer, texts: list[str], layouts) -> dict:
    """generate() kwargs that make row b write texts[b] first."""
    scripts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(lay.prompt_len for lay in layouts)
    return {"logits_processor": LogitsProcessorList([ForceText(scripts, width)])}


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_subprocess(cmd: list[str], port: int, log):
    """Run ``dac serve`` (``cmd``) in its own process group; yield its base URL once /health
    answers (up to 300 s), and stop the whole group afterwards. A generator for fixtures."""
    import os
    import signal
    import subprocess
    import time

    import httpx

    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
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


def one_line(capsys, rc: int) -> str:
    """The one-line error a CLI call printed (exit status 2, ``dac: error: ...`` last)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err and err[-1].startswith("dac: error: ")
    return err[-1]


def leftovers(root) -> list[str]:
    """The names in a folder (none if it does not exist): what a failed fetch left."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []
