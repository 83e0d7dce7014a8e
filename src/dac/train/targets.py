"""Training answer formats: the texts a model is trained to write for a suite sample.

``Sample.target`` (directive, a space, the answer) is what the evaluation suite scores; the
formats here rearrange the same answer so that its declarations are easier to learn or
cheaper to decode under: the evidence's words restated before the value, the lead written
before the directive, a multi-region answer written one focus per step. Every declaration
is rendered by :meth:`~dac.protocol.grammar.Directive.render`, the protocol's own text.
"""

from __future__ import annotations

from ..protocol.grammar import Directive, Mode
from ..tasks.core import Sample

#: what a backward-scan step writes for a section that does not hold its evidence
SCAN_MISS = "none"
#: ``[[global]]``: the step after it reads the whole context to choose the next section
GLOBAL = Directive(Mode.GLOBAL).render()
#: ``[[local]]``: the default declaration a lead (or a first key) is read under
LOCAL = Directive(Mode.LOCAL).render()


def _focus(section: int) -> str:
    """``[[focus Sk]]``: the declaration of one step reading one section."""
    return Directive(Mode.FOCUS, ((section, section),)).render()


def led_target(sample: Sample) -> str:
    """The target with the lead between directive and answer (``target`` if none). The value
    then follows the words it follows in the document, so copying it is what an induction
    head does: match the lead's last tokens, copy what came next there."""
    if not sample.lead:
        return sample.target
    return f"{sample.directive.render()} {sample.lead}{sample.answer_text}"


def lead_first_target(sample: Sample) -> str:
    """The lead, then the directive, then the answer (``target`` if no lead): the key the
    question names is written out before the section holding it is declared."""
    return lead_in_target(sample, "")


def lead_in_target(sample: Sample, lead_directive: str) -> str:
    """:func:`lead_first_target` with the lead read under ``lead_directive`` (a ``local``
    declaration's text, e.g. ``"[[local 256]]"``, as training configs give it), then
    ``[[global]]`` so that the step choosing the section reads the whole context:
    ``[[local]] lead [[global]][[focus S3]] value``."""
    if not sample.lead:
        return sample.target
    if not lead_directive:
        return f"{sample.lead}{sample.directive.render()} {sample.answer_text}"
    # no space between [[global]] and the focus: one step reads the whole context, not two
    return (f"{lead_directive} {sample.lead}{GLOBAL}{sample.directive.render()} "
            f"{sample.answer_text}")


def hop_target(sample: Sample) -> str | None:
    """:func:`stepwise_target` with its defaults: one focus per step, no scan, no keys."""
    return stepwise_target(sample)


def stepwise_target(sample: Sample, scan: bool = False, keys: str = "",
                    lead_directive: str = LOCAL) -> str | None:
    """The answer one step at a time, each step under a focus on the one section it reads,
    each focus after the first chosen by a step that reads everything:
    ``[[focus S2]] 9686033, [[global]][[focus S4]] 5312219`` (the step before a
    ``[[global]]`` reads only the previous step's section). A chain's keys are written out,
    so finding the next step is a match on the words just written.

    ``scan`` (for a sample with ``scan_last``): the last step reads the sections from the
    context's last one backwards, one step each, writing :data:`SCAN_MISS` for each section
    that does not hold its evidence; only the scan's first step follows a ``[[global]]``
    (``[[focus S3]] Mary, [[global]][[focus S8]] none, [[focus S7]] the kitchen``).

    ``keys`` (``"first"`` or ``"all"``): the first hop's (or every hop's) ``hop_keys`` are
    written before the step that chooses its section, the first one read under
    ``lead_directive`` as a retrieval lead is (``[[local]] the apple [[global]][[focus S3]]
    Mary, Mary went to [[global]][[focus S6]] the kitchen``); a later key is written under
    the previous step's focus, only before a step that follows a ``[[global]]``.
    ``None`` for samples without ``hops``."""
    if not sample.hops:
        return None
    if keys not in ("", "first", "all"):
        raise ValueError(f"keys must be '', 'first' or 'all', not {keys!r}")
    wanted = list(sample.hop_keys)[:len(sample.hops) if keys == "all" else 1] if keys else []
    wanted += [""] * (len(sample.hops) - len(wanted))
    steps = [(sec, text, i > 0, wanted[i]) for i, (sec, text) in enumerate(sample.hops)]
    if scan and sample.scan_last:
        sec, text, _, key = steps.pop()
        last = len(sample.sections)
        steps += [(k, SCAN_MISS, k == last, key if k == last else "")
                  for k in range(last, sec, -1)]
        steps.append((sec, text, sec == last, key if sec == last else ""))
    out = []
    for i, (sec, text, fresh, key) in enumerate(steps):
        focus = f"{_focus(sec)} {text}"
        if key and i == 0:
            out.append(f"{lead_directive} {key}{GLOBAL}{focus}")
        elif key and fresh:
            out.append(f"{key}{GLOBAL}{focus}")
        else:
            out.append(f"{GLOBAL if fresh else ''}{focus}")
    return ", ".join(out)
