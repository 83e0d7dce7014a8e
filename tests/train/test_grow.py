"""``grow_layers``: a model deepened by identity blocks computes what it computed before."""

from __future__ import annotations

import json

import pytest
import torch

from dac.train.config import TrainConfig
from dac.train.grow import deepen, insert_after
from dac.train.loop import DAC_CONFIG


def _llama(layers: int = 3, tied: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, max_position_embeddings=256, pad_token_id=0,
                      tie_word_embeddings=tied)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # make the trained layers' projections non-trivial
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def test_new_blocks_spread_evenly_and_end_the_stack():
    assert insert_after(6, 8) == [0, 0, 1, 0, 0, 1]
    assert insert_after(6, 10) == [0, 1, 1, 0, 1, 1]
    assert insert_after(4, 4) == [0, 0, 0, 0]
    assert sum(insert_after(5, 12)) == 7
    with pytest.raises(ValueError, match="shrink"):
        insert_after(6, 4)


def test_deepened_model_has_the_same_logits_and_greedy_text():
    m = _llama(3)
    d = deepen(m, 5).eval()
    assert d.config.num_hidden_layers == 5 and len(d.model.layers) == 5
    # each layer knows its own cache slot
    assert [layer.self_attn.layer_idx for layer in d.model.layers] == [0, 1, 2, 3, 4]
    x = torch.randint(1, 97, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(d(x).logits, m(x).logits, rtol=0, atol=1e-6)
        a = m.generate(x[:, :9], attention_mask=torch.ones(2, 9, dtype=torch.long),
                       max_new_tokens=6, do_sample=False)
        b = d.generate(x[:, :9], attention_mask=torch.ones(2, 9, dtype=torch.long),
                       max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)
    # the new blocks are copies with zeroed outputs; the old ones are untouched
    sd, src = d.state_dict(), m.state_dict()
    assert torch.count_nonzero(sd["model.layers.2.self_attn.o_proj.weight"]) == 0
    assert torch.count_nonzero(sd["model.layers.4.mlp.down_proj.weight"]) == 0
    assert torch.equal(sd["model.layers.2.self_attn.q_proj.weight"],
                       src["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(sd["model.layers.3.mlp.down_proj.weight"],
                       src["model.layers.2.mlp.down_proj.weight"])
    # and they learn: the zeroed projections get a gradient
    d.train()
    d(x, labels=x).loss.backward()
    assert d.model.layers[2].self_attn.o_proj.weight.grad.abs().sum() > 0


def test_tied_embeddings_stay_tied():
    m = _llama(2, tied=True)
    d = deepen(m, 3).eval()
    assert d.lm_head.weight is d.model.embed_tokens.weight
    x = torch.randint(1, 97, (1, 17))
    with torch.no_grad():
        torch.testing.assert_close(d(x).logits, m(x).logits, rtol=0, atol=1e-6)


def test_deepen_to_the_same_depth_is_the_model_itself():
    m = _llama(2)
    assert deepen(m, 2) is m


def _toy(**grow):
    base = TrainConfig.load("configs/toy.json").to_dict()
    base["stages"] = base["stages"][:1] + [dict(base["stages"][0], restart=True, **grow)]
    return base


def test_config_checks_grow_layers():
    assert TrainConfig.from_dict(_toy(grow_layers=3)).stages[1].grow_layers == 3
    bad = _toy(grow_layers=3)
    bad["stages"][1]["restart"] = False
    with pytest.raises(ValueError, match="restart"):
        TrainConfig.from_dict(bad)
    with pytest.raises(ValueError, match="shrink"):
        TrainConfig.from_dict(_toy(grow_layers=1))  # the toy model has 2 layers
    with pytest.raises(ValueError, match="whole number"):
        TrainConfig.from_dict(_toy(grow_layers=2.5))


@pytest.mark.slow
def test_a_grow_stage_deepens_the_trained_model(tmp_path):
    from dac.models import load
    from dac.train.loop import train

    base = _toy(grow_layers=3)
    base.update(workers=0)
    out = train(TrainConfig.from_dict(base), tmp_path / "grown", device="cpu")
    meta = json.loads((out / DAC_CONFIG).read_text())["training"]["stages"]
    assert [s["layers"] for s in meta] == [2, 3]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    grow = [r for r in log if r["event"] == "grow"]
    assert len(grow) == 1 and grow[0]["layers"] == [2, 3] and grow[0]["stage"] == 1
    model, _ = load(out)
    assert model.config.num_hidden_layers == 3
