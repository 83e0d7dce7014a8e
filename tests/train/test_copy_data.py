"""The synthetic copy warm-up: sequences whose predictable part is exactly what repeats."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest

from dac.train.config import TrainConfig
from dac.train.data import collate, copy_example, copy_ids


def _repeats(ids: list[int], n: int = 8) -> int:
    """Positions whose preceding ``n`` tokens occurred earlier (copyable positions)."""
    seen, hits = set(), 0
    for i in range(n, len(ids)):
        gram = tuple(ids[i - n:i])
        hits += gram in seen
        seen.add(gram)
    return hits


def test_copy_sequences_are_deterministic_sized_and_repeat(tokenizer):
    for seed in range(12):
        a, b = copy_ids(tokenizer, 300, seed), copy_ids(tokenizer, 300, seed)
        assert a == b and len(a) == 300 and a[0] == tokenizer.bos_token_id
        assert all(0 <= t < tokenizer.vocab_size for t in a)
        assert _repeats(a) > 0  # something to copy in every sequence
    assert copy_ids(tokenizer, 300, 0) != copy_ids(tokenizer, 300, 1)
    # both formats occur: random spans (no line breaks) and key : value tables
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    kinds = {nl in copy_ids(tokenizer, 300, s) for s in range(20)}
    assert kinds == {True, False}


def test_key_value_lookups_repeat_the_tabled_value(tokenizer):
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"]
    seed = next(s for s in range(50) if nl[-1] in copy_ids(tokenizer, 400, s))
    ids = copy_ids(tokenizer, 400, seed)[1:]
    lines, cur = [], []
    for t in ids:
        cur.append(t)
        if cur[-len(nl):] == nl:
            lines.append(tuple(cur))
            cur = []
    table = {}
    repeated = 0
    for line in lines:  # every complete line: a key (2 tokens) maps to one value
        key = line[:2]
        if key in table:
            assert table[key] == line
            repeated += 1
        table[key] = line
    assert repeated > 0


def test_copy_examples_train_the_whole_sequence_as_prompt_loss(tokenizer):
    ex = copy_example(tokenizer, 200, 3)
    batch = collate([ex], 256, tokenizer.pad_token_id)
    assert (batch.targets != -100).sum() == 0
    assert (batch.prompt_targets[0, :199] == batch.ids[0, 1:200]).all()
    assert (batch.prompt_targets[0, 199:] == -100).all()


def test_copy_stages_need_the_prompt_loss():
    cfg = TrainConfig.load("research/configs/dac-tiny-copy.json")
    assert cfg.stages[0].kind == "copy" and cfg.stages[0].prompt_loss_weight > 0
    d = cfg.to_dict()
    d["stages"][0]["prompt_loss_weight"] = 0.0
    with pytest.raises(ValueError, match="prompt_loss_weight"):
        TrainConfig.from_dict(d)
    d["stages"][0].update(prompt_loss_weight=1.0, kind="spans")
    with pytest.raises(ValueError, match="kind"):
        TrainConfig.from_dict(d)


def test_short_copy_sequences_still_hold_copies(tokenizer):
    """A 64-token copy stage (the warm-up's first, short-distance step) repeats within 64."""
    seqs = [copy_ids(tokenizer, 64, seed) for seed in range(30)]
    assert all(len(a) == 64 for a in seqs)
    assert sum(_repeats(a, 4) > 0 for a in seqs) >= 24


def test_copy_formats_pick_the_format(tokenizer):
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    spans: set[int] = set()
    for seed in range(12):
        rep = copy_ids(tokenizer, 65, seed, ("repeat",))
        period = next(p for p in range(16, 33) if rep[1:65 - p] == rep[1 + p:])
        spans.add(period)  # a 16-32-token span, then its copies
        assert nl in copy_ids(tokenizer, 200, seed, ("table",))
        assert nl not in copy_ids(tokenizer, 200, seed, ("repeat", "spans"))
    assert len(spans) > 3  # copy distances vary: no fixed offset to read
    with pytest.raises(ValueError, match="copy_formats"):
        TrainConfig.from_dict({"stages": [{"length": 64, "steps": 1, "batch_tokens": 64,
                                           "kind": "copy", "prompt_loss_weight": 1,
                                           "copy_formats": ["bogus"]}]})


def test_random_spans_draw_digits_bytes_and_merges_but_no_special_token(tokenizer):
    """Copy data covers what the tasks copy: numbers (one token per digit with split_digits)
    and single-byte tokens as well as BPE merges; never a special token."""
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    specials = set(tokenizer.all_special_ids)
    seen: set[int] = set()
    for seed in range(20):
        ids = copy_ids(tokenizer, 256, seed, ("repeat", "spans"))
        assert not specials & set(ids[1:])
        seen.update(ids[1:])
    assert len(seen & digits) == 10
    assert min(seen) < 260 and max(seen) > tokenizer.vocab_size // 2  # bytes and merges


def test_numbers_in_random_spans_are_runs_of_digits(tokenizer):
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    text = tokenizer.decode(copy_ids(tokenizer, 512, 4, ("spans",))[1:])
    assert re.search(r"\d{3,}", text)
    assert any(t in digits for t in copy_ids(tokenizer, 512, 4, ("spans",)))


def _section_calls(stage, n: int) -> list[dict]:
    """The keyword arguments StageData passes to the sample function for examples 0..n-1."""
    from dac.models import tiny_tokenizer
    from dac.train.data import StageData

    calls: list[dict] = []

    def fake(task, tok, length, seed, **kw):
        calls.append(kw)
        raise ValueError("stop")

    cfg = TrainConfig.from_dict({"tasks": {"passkey": 1}, "stages": [asdict(stage)]})
    data = StageData(cfg, cfg.stages[0], tiny_tokenizer(), ["passkey"], 0, 1, 768, fake)
    out = []
    for i in range(n):
        calls.clear()
        data[i]
        out.append(calls[0])
    return out


def test_a_stage_with_sections_draws_each_examples_section_count(tokenizer):
    """``sections: [lo, hi]`` reaches the sample function as ``sections=k``, k in lo..hi, a pure
    function of the example's seed; stages without it call the function as before."""
    from dac.train.data import StageData

    calls: list[dict] = []

    def fake(task, tok, length, seed, **kw):
        calls.append(kw)
        raise ValueError("stop")  # only the call matters here

    cfg = TrainConfig.from_dict({"tasks": {"passkey": 1}, "stages": [
        {"length": 512, "steps": 4, "batch_tokens": 1024, "sections": [4, 16]},
        {"length": 512, "steps": 4, "batch_tokens": 1024}]})
    for stage, want in zip(cfg.stages, (True, False)):
        calls.clear()
        data = StageData(cfg, stage, tokenizer, ["passkey"], 0, 1, 768, fake)
        for i in range(24):
            data[i]
        if want:
            ks = {c["sections"] for c in calls}
            assert ks <= set(range(4, 17)) and len(ks) > 4
            calls.clear()
            data[3]
            first = calls[0]["sections"]
            calls.clear()
            data[3]
            assert calls[0]["sections"] == first
        else:
            assert all(c == {} for c in calls)
    # sections_fraction: only that share of the examples is cut by the range, the rest keep
    # the suite's own count; those that are cut draw the same k as with a fraction of 1
    full = {i: c["sections"] for i, c in enumerate(_section_calls(cfg.stages[0], 200))}
    half = TrainConfig.from_dict({"tasks": {"passkey": 1}, "stages": [
        {"length": 512, "steps": 4, "batch_tokens": 1024, "sections": [4, 16],
         "sections_fraction": 0.5}]})
    got = _section_calls(half.stages[0], 200)
    cut = [i for i, c in enumerate(got) if "sections" in c]
    assert 60 <= len(cut) <= 140 and all(got[i]["sections"] == full[i] for i in cut)
    for bad in ([0, 4], [5, 4], [4], [4, 500]):
        with pytest.raises(ValueError, match="sections"):
            TrainConfig.from_dict({"stages": [{"length": 512, "steps": 1, "batch_tokens": 1024,
                                               "sections": bad}]})


def test_lookup_lines_name_the_section_that_holds_their_key(tokenizer):
    """``lookup``: keyed lines in marked sections, then ``key -> [[focus Sk]] value`` lines
    whose ``Sk`` is the section where that key was tabled and whose value is its value
    (checked on token ids: random tokens may decode to anything)."""
    from dac.protocol.grammar import Directive, Mode
    from dac.protocol.prompt import section_marker

    enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    (nl,), sep, arrow = enc("\n"), enc(" :"), enc(" ->")
    markers = {tuple(enc(section_marker(i) + " ")): i for i in range(1, 17)}
    for seed in range(6):
        ids = copy_ids(tokenizer, 400, seed, ["lookup"])
        assert ids == copy_ids(tokenizer, 400, seed, ["lookup"]) and len(ids) == 400
        lines, cur = [], []
        for t in ids[1:]:
            if t == nl:
                lines.append(cur)
                cur = []
            else:
                cur.append(t)
        table, section, lookups = {}, 0, 0
        for line in lines:
            for m, i in markers.items():
                if tuple(line[:len(m)]) == m:
                    section, line = i, line[len(m):]
                    break
            key = tuple(line[:2])
            if line[2:2 + len(sep)] == sep:
                table[key] = (section, line[2 + len(sep):])
                continue
            sec, value = table[key]
            focus = enc(" " + Directive(Mode.FOCUS, ((sec, sec),)).render())
            assert line == list(key) + arrow + focus + value
            lookups += 1
        assert lookups > 0 and len({s for s, _ in table.values()}) >= 2


def test_lookup_is_opt_in():
    from dac.train.config import ALL_COPY_FORMATS, COPY_FORMATS, Stage

    assert "lookup" in ALL_COPY_FORMATS and "lookup" not in COPY_FORMATS
    TrainConfig(stages=(Stage(length=256, steps=1, batch_tokens=512, kind="copy",
                              prompt_loss_weight=1.0, copy_formats=["lookup"]),)).validate()
    with pytest.raises(ValueError, match="copy_formats"):
        TrainConfig.from_dict({"stages": [{"length": 256, "steps": 1, "batch_tokens": 512,
                                           "kind": "copy", "prompt_loss_weight": 1.0,
                                           "copy_formats": ["lookups"]}]})
