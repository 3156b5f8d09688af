"""CI budget of the fuzzers in fuzz/ (issue #7, item 1): every target, a fixed seed.

``python fuzz/run.py --iterations N --seed S`` runs longer campaigns;
RELIABILITY_LONG=1 runs 10x more inputs here.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz.run import fuzz_target, mutate  # noqa: E402
from fuzz.targets import build_targets  # noqa: E402

LONG = os.environ.get("RELIABILITY_LONG", "") not in ("", "0")

TARGETS = build_targets()
ITERATIONS = 20000 if LONG else 2000


@pytest.mark.timeout(300 if LONG else 60)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name):
    result = fuzz_target(TARGETS[name], ITERATIONS, seed=20240607)
    assert result.iterations == ITERATIONS
    details = "\n".join(f"{f.error}\ninput {f.data[:64].hex()}\n{f.trace}"
                        for f in result.findings)
    assert not result.findings, details


def test_every_corpus_entry_is_accepted_or_rejected_cleanly():
    for target in TARGETS.values():
        assert target.corpus, target.name
        for data in target.corpus:
            try:
                target.run(data, __import__("random").Random(0))
            except target.allowed:
                pass


def test_the_harness_reports_an_escaping_exception():
    """The runner must be able to fail: a target that raises KeyError is a finding."""
    from fuzz.targets import Target

    def broken(data, rng):
        if data[:1] == b"\x00":
            raise KeyError("boom")

    result = fuzz_target(Target("broken", [b"\x00abc", b"\x01"], broken, (ValueError,)),
                         200, seed=1)
    assert result.findings and "KeyError" in result.findings[0].error


def test_mutations_change_inputs():
    import random
    rng = random.Random(3)
    base = b"0123456789" * 4
    assert sum(mutate(base, rng, [base]) != base for _ in range(100)) > 90
