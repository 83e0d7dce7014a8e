"""Arms: what one column of an evaluation runs, a prompt protocol and an attention policy.

The paper compares three arms on the same examples (``--arms vanilla,da-nm,da``):

* ``vanilla``: the context inline, full attention;
* ``da-nm``: the DA prompt (magic chunks), full attention, no mask;
* ``da``: the DA prompt with the mask the model's directives declare.

Any other pair is written ``PROTOCOL/POLICY`` (``da/quest:budget=0.1``,
``brackets/streaming``). A bare policy spec (``dac``, ``quest``) runs under the run's
``--protocol``. An arm's label is what names its cells, its records' ``arm`` field and its
column in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the paper's named arms: label -> (protocol, policy)
NAMED_ARMS: dict[str, tuple[str, str]] = {
    "vanilla": ("vanilla", "full"),
    "da-nm": ("da", "full"),
    "da": ("da", "dac"),
}
#: ``--arms paper``
PAPER_ARMS = ("vanilla", "da-nm", "da")


@dataclass(frozen=True)
class Arm:
    label: str
    protocol: str
    policy: str


def is_arm_spec(spec: str) -> bool:
    """Whether ``spec`` names a protocol (a named arm or ``PROTOCOL/POLICY``), not a bare
    policy."""
    return spec in NAMED_ARMS or "/" in spec


def resolve_arm(spec: str, protocol: str) -> Arm:
    """The arm ``spec`` names; a bare policy spec runs under ``protocol``."""
    if spec in NAMED_ARMS:
        proto, policy = NAMED_ARMS[spec]
        return Arm(spec, proto, policy)
    if "/" in spec:
        proto, _, policy = spec.partition("/")
        if not proto.strip() or not policy.strip():
            raise ValueError(f"bad arm {spec!r}: write PROTOCOL/POLICY, e.g. da/quest")
        return Arm(spec, proto.strip().lower(), policy.strip())
    return Arm(spec, protocol, spec)


def check_arm(spec: str) -> None:
    """Validate an arm spec's protocol (its policy is validated by the caller)."""
    from ..protocol.base import get_protocol

    if spec in NAMED_ARMS or "/" not in spec:
        return
    get_protocol(resolve_arm(spec, "").protocol)  # a ValueError naming the known protocols


def arm_policy(label: str) -> str:
    """The policy spec an arm label runs (the label itself for a bare policy)."""
    return resolve_arm(label, "").policy
