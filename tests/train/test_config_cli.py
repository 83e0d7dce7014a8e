"""The training config and the ``dac train`` command: clear errors, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dac.cli import main
from dac.train.config import Stage, TrainConfig
from dac.train.loop import lr_at, seed_offset, segment, stage_shape
from dac.train.tokenizer import protocol_tokens


def test_shipped_configs_load():
    cfg = TrainConfig.load("research/configs/dac-tiny.json")
    assert cfg.model.head_dim == 64 and cfg.model.hidden == cfg.model.heads * 64
    assert cfg.seed_base >= 1_000_000  # training seeds stay clear of evaluation seeds
    assert [s.restart for s in cfg.stages].count(True) >= 1
    toy = TrainConfig.load("configs/toy.json")
    assert toy.total_steps > 0
    shipped = TrainConfig.load("configs/dac-tiny-focus-weight.json")  # dac-tiny's recipe
    assert shipped.model == cfg.model and shipped.answer_leads and shipped.seed_base >= 1_000_000
    copy = [s for s in shipped.stages if s.kind == "copy"]
    assert copy and all(s.until_copy_loss for s in copy)  # copying first, by distance
    assert [s.length for s in copy] == sorted(s.length for s in copy)


def test_segments_follow_restarts():
    cfg = TrainConfig.load("research/configs/dac-tiny.json")
    starts = [i for i, s in enumerate(cfg.stages) if s.restart]
    for i in range(len(cfg.stages)):
        a, b = segment(cfg, i)
        assert a <= i < b
        assert a == max([0] + [r for r in starts if r <= i])


def test_stage_shape_fits_the_prompt_tolerance():
    cfg = TrainConfig.load("research/configs/dac-tiny.json")
    for s in cfg.stages:
        width, batch = stage_shape(s)
        assert width % 128 == 0 and width >= s.length * 1.05 + 96 and batch >= 1


def test_copy_stages_are_padded_to_their_length_only():
    copy = Stage(length=96, steps=1, batch_tokens=8192, kind="copy", prompt_loss_weight=1.0)
    tasks = Stage(length=96, steps=1, batch_tokens=8192)
    assert stage_shape(copy) == (128, 64)
    assert stage_shape(tasks)[0] >= 96 * 1.05 + 96  # room for the prompt tolerance and target
    assert stage_shape(Stage(length=128, steps=1, batch_tokens=8192, kind="copy",
                             prompt_loss_weight=1.0)) == (128, 64)
    short = TrainConfig.from_dict({"stages": [  # copies 16-48 tokens apart: a copy stage only
        {"length": 48, "steps": 1, "batch_tokens": 3072, "kind": "copy",
         "prompt_loss_weight": 1.0}]}).stages[0]
    assert short.lo == 24 and stage_shape(short) == (64, 48)


def test_a_restart_stage_sets_its_own_peak_lr():
    cfg = TrainConfig.from_dict({"lr": 1e-3, "min_lr": 1e-4, "warmup": 1, "stages": [
        {"length": 512, "steps": 1, "batch_tokens": 1024, "restart": True, "lr": 5e-4}]})
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 10, 0.0, cfg.stages[0].lr) == pytest.approx(5e-4)
    assert lr_at(cfg, 10, 1.0, cfg.stages[0].lr) == pytest.approx(1e-4)


@pytest.mark.parametrize("bad, msg", [
    ({"stages": []}, "no curriculum stages"),
    ({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024}], "bogus": 1}, "unknown config keys"),
    ({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024}],
      "model": {"hidden": 100, "heads": 2, "head_dim": 64}}, "hidden must equal"),
    ({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024}],
      "dense_answer_fraction": 2}, "dense_answer_fraction"),
    ({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024,
                  "directive_loss_weight": 0}]}, "directive_loss_weight"),
    ({"stages": [{"length": 48, "steps": 1, "batch_tokens": 1024}]}, "bad stage"),
    ({"stages": [{"length": 12, "steps": 1, "batch_tokens": 1024, "kind": "copy",
                  "prompt_loss_weight": 1}]}, "bad stage"),
    ({"stages": [{"length": 512, "min_length": 600, "steps": 1, "batch_tokens": 1024}]},
     "min_length must lie"),
    ({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024, "lr": 1e-3}]},
     "only starts a schedule"),
    ({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024, "lr": -1.0,
                  "restart": True}]}, "lr must be > 0"),
])
def test_bad_configs_are_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig.from_dict(bad)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "config not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024}]}))
    assert main(["train", "--config", str(good), "--stages", "3:9"]) == 2
    assert "outside the config" in capsys.readouterr().err
    assert main(["train", "--config", str(good), "--init", str(tmp_path / "nope")]) == 2
    assert "--init directory not found" in capsys.readouterr().err


def test_protocol_tokens_cover_markers_and_directives():
    toks = protocol_tokens(3)
    assert {"[S1]", "[S3]", "[[global]]", "[[local]]", "]]", "[[focus S2]]", "[[focus S2",
            ", S3", "-S3"} <= set(toks)
    assert len(toks) == len(set(toks))


def test_unknown_tasks_are_refused_before_any_work(tmp_path):
    from dac.train.loop import train

    cfg = TrainConfig.from_dict({"tasks": {"no_such_task": 1},
                                 "stages": [{"length": 512, "steps": 1, "batch_tokens": 1024}]})
    with pytest.raises(ValueError, match="unknown tasks in config: no_such_task"):
        train(cfg, tmp_path / "x")


def test_finetune_config_continues_the_shipped_model():
    """``research/configs/dac-tiny-ft.json`` runs with ``--init src/dac/assets/dac-tiny``: same
    model shape, tokenizer and planner, training seeds clear of evaluation seeds and of the first
    recipe's, and every stage's tasks inside its mixture (``train`` refuses them otherwise)."""
    base = TrainConfig.load("research/configs/dac-tiny.json")
    ft = TrainConfig.load("research/configs/dac-tiny-ft.json")
    assert (ft.model, ft.tokenizer, ft.plan) == (base.model, base.tokenizer, base.plan)
    used = sum(st.steps * stage_shape(st)[1] for st in base.stages)  # seeds the first recipe plans
    assert ft.seed_base >= base.seed_base + used
    assert ft.stages[0].restart and all(s.prompt_loss_weight > 0 for s in ft.stages)
    mixture = {t for t, w in ft.tasks.items() if w > 0}
    for s in ft.stages:
        assert set(s.tasks or {}) <= mixture
    assert [s.length for s in ft.stages] == sorted(s.length for s in ft.stages)


def test_split_digits_tokenizes_a_number_alike_in_document_and_answer():
    from dac.models import train_tokenizer

    text = "The pass key is 59776. One of the magic numbers is: 8127619. 968a0d82 " * 30
    for split in (False, True):
        tok = train_tokenizer([text] * 4, vocab_size=330, extra_tokens=protocol_tokens(4),
                              split_digits=split)

        def digits(s: str) -> list[str]:
            ids = tok(s, add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == s  # nothing lost
            return [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()]

        doc, ans = digits("is: 8127619."), digits("[[focus S2]] 8127619")
        if split:
            assert doc == ans == list("8127619")
        else:  # BPE merges digit runs into chunks of several digits
            assert any(len(t.strip()) > 1 for t in doc + ans)


def test_question_first_must_be_a_boolean():
    stage = {"length": 256, "steps": 1, "batch_tokens": 512}
    assert TrainConfig.from_dict({"question_first": True, "stages": [stage]}).question_first
    with pytest.raises(ValueError, match="question_first"):
        TrainConfig.from_dict({"question_first": "yes", "stages": [stage]})


def test_lead_first_needs_answer_leads_and_a_boolean():
    stage = {"length": 256, "steps": 1, "batch_tokens": 512, "lead_first": True}
    cfg = TrainConfig.from_dict({"answer_leads": True, "stages": [stage]})
    assert cfg.stages[0].lead_first
    with pytest.raises(ValueError, match="answer_leads"):
        TrainConfig.from_dict({"stages": [stage]})
    with pytest.raises(ValueError, match="lead_first"):
        TrainConfig.from_dict({"answer_leads": True, "stages": [{**stage, "lead_first": 1}]})


def test_lead_directive_is_a_local_declaration_after_lead_first():
    stage = {"length": 256, "steps": 1, "batch_tokens": 512, "lead_first": True}
    for ok in ("[[local]]", "[[local 256]]"):
        cfg = TrainConfig.from_dict({"answer_leads": True,
                                     "stages": [{**stage, "lead_directive": ok}]})
        assert cfg.stages[0].lead_directive == ok
    for bad in ("[[global]]", "[[focus S1]]", "local", "[[local x]]", "[[local]", 3):
        with pytest.raises(ValueError, match="lead_directive"):
            TrainConfig.from_dict({"answer_leads": True,
                                   "stages": [{**stage, "lead_directive": bad}]})
    with pytest.raises(ValueError, match="lead_first"):
        TrainConfig.from_dict({"answer_leads": True, "stages": [
            {**stage, "lead_first": False, "lead_directive": "[[local]]"}]})


def test_per_hop_is_a_boolean():
    stage = {"length": 256, "steps": 1, "batch_tokens": 512, "per_hop": True}
    assert TrainConfig.from_dict({"stages": [stage]}).stages[0].per_hop
    assert not TrainConfig.from_dict({"stages": [{**stage, "per_hop": False}]}
                                     ).stages[0].per_hop
    with pytest.raises(ValueError, match="per_hop"):
        TrainConfig.from_dict({"stages": [{**stage, "per_hop": "yes"}]})



def test_hop_keys_need_per_hop_and_a_lead_directive():
    stage = {"length": 256, "steps": 1, "batch_tokens": 512, "per_hop": True,
             "lead_first": True, "lead_directive": "[[local]]", "hop_keys": "first"}
    cfg = {"answer_leads": True}
    assert TrainConfig.from_dict({**cfg, "stages": [stage]}).stages[0].hop_keys == "first"
    assert TrainConfig.from_dict({**cfg, "stages": [{**stage, "hop_keys": "all"}]})
    for bad, msg in [({"per_hop": False}, "needs per_hop and lead_directive"),
                     ({"lead_first": False, "lead_directive": ""}, "needs per_hop"),
                     ({"hop_keys": "some"}, "hop_keys must be"),
                     ({"hop_keys": True}, "hop_keys must be")]:
        with pytest.raises(ValueError, match=msg):
            TrainConfig.from_dict({**cfg, "stages": [{**stage, **bad}]})


def test_seeds_from_names_an_earlier_stage():
    a = {"length": 256, "steps": 3, "batch_tokens": 512}
    cfg = TrainConfig.from_dict({"stages": [a, a, {**a, "seeds_from": 0}]})
    assert cfg.stages[2].seeds_from == 0
    for bad in (2, 3, -1, True, "0", 1.0):
        with pytest.raises(ValueError, match="seeds_from must name an earlier stage"):
            TrainConfig.from_dict({"stages": [a, a, {**a, "seeds_from": bad}]})


def test_seeds_from_draws_the_earlier_stages_examples_again():
    """A second pass: the stage's first example index is that of the stage it names (and of
    the stage that one names), while the stages after it keep their own planned seeds."""
    a = {"length": 256, "steps": 3, "batch_tokens": 512}
    b = {"length": 512, "steps": 2, "batch_tokens": 2048}
    plain = TrainConfig.from_dict({"stages": [a, b, b, a]})
    again = TrainConfig.from_dict({"stages": [a, b, {**b, "seeds_from": 1},
                                              {**a, "seeds_from": 2}]})
    own = [seed_offset(plain, i) for i in range(4)]
    assert own == [0, 3 * stage_shape(plain.stages[0])[1],
                   own[1] + 2 * stage_shape(plain.stages[1])[1],
                   own[2] + 2 * stage_shape(plain.stages[2])[1]]
    assert [seed_offset(again, i) for i in range(4)] == [own[0], own[1], own[1], own[1]]


def test_scan_needs_per_hop_and_is_a_boolean():
    stage = {"length": 256, "steps": 1, "batch_tokens": 512, "per_hop": True, "scan": True}
    assert TrainConfig.from_dict({"stages": [stage]}).stages[0].scan
    with pytest.raises(ValueError, match="needs per_hop"):
        TrainConfig.from_dict({"stages": [{**stage, "per_hop": False}]})
    with pytest.raises(ValueError, match="scan"):
        TrainConfig.from_dict({"stages": [{**stage, "scan": 1}]})


ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "configs", ROOT / "research" / "configs"]  # the recipe; the recorded runs


@pytest.mark.parametrize("name", sorted(str(p.relative_to(ROOT))
                                        for d in CONFIGS for p in d.rglob("*.json")))
def test_every_recipe_in_the_repo_loads(name):
    """Each recorded or planned recipe validates, so a documented command can run as written."""
    cfg = TrainConfig.load(ROOT / name)
    assert cfg.stages and cfg.model.head_dim == 64


def test_progress_lines_say_the_total_and_the_time_left(capsys):
    from dac.train.commands import progress_line
    from dac.train.loop import stage_eta

    assert stage_eta(10, 100, 20.0, None) == 180.0  # 90 steps at 2 s each
    assert stage_eta(10, 100, 20.0, 50.0) == 30.0  # the time budget ends it first
    progress_line({"event": "step", "stage": 3, "stages": [2, 6], "length": 4096, "step": 10,
                   "of": 100, "loss": 2.5, "tok_per_s": 900, "elapsed_s": 75, "eta_s": 180})
    out = capsys.readouterr().out
    assert "stage 2/4 (4096 tokens)" in out and "step 10/100" in out and "ETA 3m00s" in out
