"""Shared fixtures: tiny random-weight models and a tokenizer, all built offline."""

from __future__ import annotations

import pytest
import torch

from dac.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def llama(tokenizer):
    return tiny_model("llama", vocab_size=len(tokenizer))


@pytest.fixture(params=["llama", "qwen2", "qwen3", "gemma"])
def any_model(request, tokenizer):
    return tiny_model(request.param, vocab_size=len(tokenizer), seed=1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
