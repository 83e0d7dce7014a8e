"""The copying probes measure what they claim: a perfect copier scores ~0 on the repeat and
on the answer; a model that ignores its input pays log(vocab) everywhere."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from dac.train.probe import answer_losses, repeat_loss

V = 512


class Copier(torch.nn.Module):
    """Predicts the token ``lag`` positions back, shifted by one (a perfect induction head);
    before position ``lag`` it predicts nothing in particular (uniform)."""

    def __init__(self, lag: int):
        super().__init__()
        self.lag = lag
        self.device = torch.device("cpu")

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        b, n = ids.shape
        logits = torch.zeros(b, n, V)
        for p in range(self.lag, n):
            logits[torch.arange(b), p, ids[:, p - self.lag + 1]] = 50.0
        return SimpleNamespace(logits=logits)


class Oracle(torch.nn.Module):
    """Knows the sequence it is fed: puts all mass on each next token."""

    device = torch.device("cpu")

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(*ids.shape, V)
        logits[:, :-1].scatter_(-1, ids[:, 1:, None], 50.0)
        return SimpleNamespace(logits=logits)


class Uniform(Oracle):
    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(*ids.shape, V))


def test_repeat_loss_separates_a_copier_from_a_model_that_does_not_copy():
    span = 40
    copier = repeat_loss(Copier(span), bos_id=1, vocab=V, span=span)
    assert copier["repeat"] < 1e-3
    assert abs(copier["first"] - math.log(V)) < 0.5  # the first copy cannot be predicted
    blind = repeat_loss(Uniform(), bos_id=1, vocab=V, span=span)
    assert abs(blind["first"] - math.log(V)) < 1e-3 and abs(blind["repeat"] - math.log(V)) < 1e-3


def test_answer_losses_are_per_target_position(tokenizer):
    perfect = answer_losses(Oracle(), tokenizer, "passkey", length=400, n=2)
    blind = answer_losses(Uniform(), tokenizer, "passkey", length=400, n=2)
    assert len(perfect) == len(blind) >= 2  # the directive token, then the answer's
    assert max(perfect) < 1e-3
    assert all(abs(x - math.log(V)) < 1e-3 for x in blind)


def test_answer_losses_with_a_lead_skip_to_the_value(tokenizer):
    """With ``lead``: the directive token, then the value's tokens (the lead's are skipped)."""
    from dac.tasks import make_sample

    s = make_sample("passkey", tokenizer, 400, 0)
    n_value = len(tokenizer(s.answer_text, add_special_tokens=False)["input_ids"])
    perfect = answer_losses(Oracle(), tokenizer, "passkey", length=400, n=1, lead=True,
                            positions=32)
    assert len(perfect) == 1 + n_value and max(perfect) < 1e-3


class Peeker(torch.nn.Module):
    """Predicts the true next token (it reads ahead), or always ``constant``."""

    def __init__(self, vocab: int, constant: int | None = None):
        super().__init__()
        self.vocab, self.constant = vocab, constant
        self.device = torch.device("cpu")

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        nxt = torch.roll(ids, -1, 1) if self.constant is None else torch.full_like(
            ids, self.constant)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float())


def test_lookup_accuracy_counts_the_focus_tokens_predicted_right():
    """A model that reads ahead names every section (1.0); one that always writes the same
    focus token scores at most the floor, the most frequent section's share."""
    from pathlib import Path

    import pytest
    from transformers import AutoTokenizer

    from dac.models import tiny_tokenizer
    from dac.train.probe import lookup_accuracy

    asset = Path(__file__).resolve().parents[2] / "src" / "dac" / "assets" / "dac-tiny"
    tok = AutoTokenizer.from_pretrained(asset, local_files_only=True)
    perfect = lookup_accuracy(Peeker(len(tok)), tok, length=300, n=3)
    assert perfect["focus_right"] == 1.0 and perfect["focus_tokens"] > 0
    s1 = tok.convert_tokens_to_ids("[[focus S1]]")
    fixed = lookup_accuracy(Peeker(len(tok), s1), tok, length=300, n=3)
    assert fixed["focus_right"] <= fixed["floor"] < 1.0
    assert fixed["focus_tokens"] == perfect["focus_tokens"]
    with pytest.raises(ValueError, match="single-token"):
        lookup_accuracy(Peeker(512), tiny_tokenizer(), length=300, n=1)


def test_probe_lookup_on_a_multi_token_focus_tokenizer_is_a_usage_error(tmp_path, capsys):
    import pytest

    from dac.models import tiny_model, tiny_tokenizer
    from dac.train.probe import main

    tok = tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--lookup", "--length", "128", "--n", "1", "--tasks", "passkey"])
    assert e.value.code == 2 and "single-token" in capsys.readouterr().err
