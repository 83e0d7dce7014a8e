"""Shared fixtures: tiny random-weight models and a tokenizer, all built offline."""

from __future__ import annotations

import pytest
import torch

from dac.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def protocol_tokenizer():
    """A tokenizer built like the shipped model's: every directive piece of sections 1..12
    (``[[focus S3]]``, ``[[focus S3``, ``, S3``, ``-S3``) and every marker is one added token."""
    from dac.models import train_tokenizer
    from dac.protocol.prompt import SYSTEM_PROMPT
    from dac.train.tokenizer import protocol_tokens

    text = SYSTEM_PROMPT + " the river runs past the old mill and the harbour 0123456789 " * 20
    return train_tokenizer([text] * 4, vocab_size=400, extra_tokens=protocol_tokens(12))


@pytest.fixture(scope="session")
def llama(tokenizer):
    return tiny_model("llama", vocab_size=len(tokenizer))


@pytest.fixture(params=["llama", "qwen2", "qwen3", "gemma"])
def any_model(request, tokenizer):
    return tiny_model(request.param, vocab_size=len(tokenizer), seed=1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
