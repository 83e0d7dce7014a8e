"""Shared hypothesis settings for the fuzz suite.

By default the examples are derandomized (the same every run), so the test suite is
reproducible. For exploratory fuzzing: ``DAC_FUZZ_RANDOM=1`` draws fresh random examples and
``DAC_FUZZ_SCALE=10`` multiplies every example budget. Anything found there gets pinned as an
ordinary test (see docs/reliability.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("DAC_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("DAC_FUZZ_RANDOM", "") not in ("", "0")


def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max(1, int(max_examples * SCALE)), deadline=None,
                    derandomize=not RANDOM, database=None if not RANDOM else settings().database,
                    print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
