"""The training loss: what each token weighs."""

from __future__ import annotations

import pytest
import torch

from dac.models import tiny_model
from dac.train.data import Example, collate
from dac.train.loop import batch_loss
from dac.train.masking import ATTN_IMPLEMENTATION, AnswerMask, register


@pytest.mark.parametrize("weight", [1.0, 4.0])
def test_directive_tokens_weigh_directive_loss_weight(tokenizer, weight):
    """Target loss = sum(w * token loss) / sum(w), w = weight on the directive's tokens."""
    ids = tokenizer("The key is 4821. Answer: [[focus S3]] 4821", add_special_tokens=True)
    ids = ids["input_ids"] + [tokenizer.eos_token_id]
    prompt_len, head = len(ids) - 6, 2
    ex = Example(ids, prompt_len, AnswerMask(-1, []), "t", 0, head)
    batch = collate([ex], len(ids) + 3, tokenizer.pad_token_id)
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=2)
    register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    try:
        with torch.no_grad():
            loss, per_example, directive_ok = batch_loss(model, batch, torch.device("cpu"), 16,
                                           directive_weight=weight)
            model.set_attn_implementation("sdpa")
            logits = model(batch.ids).logits[0]
    finally:
        model.set_attn_implementation("sdpa")
    pos = torch.arange(prompt_len - 1, len(ids) - 1)
    tok_loss = torch.nn.functional.cross_entropy(logits[pos], batch.ids[0, pos + 1],
                                                 reduction="none")
    w = torch.ones_like(tok_loss)
    w[:head] = weight
    torch.testing.assert_close(loss, (tok_loss * w).sum() / w.sum(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_example[0], tok_loss.sum(), atol=1e-4, rtol=1e-5)
    assert batch.directive[0].sum() == head
    right = bool((logits[pos[:head]].argmax(-1) == batch.ids[0, pos[:head] + 1]).all())
    assert directive_ok.tolist() == [float(right)]


def test_directive_ok_marks_each_example(tokenizer):
    """1 when every directive token is the argmax, 0 when one is not, -1 without a directive."""
    text = "The key is 4821. Answer: [[focus S3]] 4821"
    ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    prompt_len = len(ids) - 6
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=2)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    pred = logits.argmax(-1).tolist()
    # the same sequence with its first directive token replaced by the model's own guess, so
    # one example's directive is right and the other's is wrong (the random model is wrong)
    hit = list(ids)
    hit[prompt_len] = pred[prompt_len - 1]
    assert hit != ids
    exs = [Example(hit, prompt_len, AnswerMask(-1, []), "t", 0, 1),
           Example(ids, prompt_len, AnswerMask(-1, []), "t", 0, 1),
           Example(ids, prompt_len, AnswerMask(-1, []), "t", 0, 0)]
    batch = collate(exs, len(ids) + 3, tokenizer.pad_token_id)
    register()
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    try:
        with torch.no_grad():
            _, _, directive_ok = batch_loss(model, batch, torch.device("cpu"), 16)
    finally:
        model.set_attn_implementation("sdpa")
    assert directive_ok.tolist() == [1.0, 0.0, -1.0]
