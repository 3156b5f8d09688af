"""Fuzz every engine and codec that parses bytes chosen by a remote peer.

    python fuzz/run.py                              # every target, 2000 inputs each
    python fuzz/run.py --target yamux --iterations 100000 --seed 7
    python fuzz/run.py --list

Inputs are plain random bytes (1 in 5) or mutations of a corpus of valid inputs built
with our own engines (bit flips, byte changes, insertions, deletions, duplicated and
spliced ranges, truncation, boundary values, length fields turned huge). Each input
is fed to a fresh engine in random splits. An exception outside the target's
``allowed`` list, an assertion of the target, or one input taking longer than
``--slow`` seconds is a finding: it is printed with its seed, and saved to
``fuzz/findings/<target>-<seed>-<i>.bin`` with ``--save``. A run is reproducible
from ``--seed``; ``--replay FILE`` feeds one saved input again.

Exit status: 0 when there are no findings, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.targets import Target, build_targets  # noqa: E402

_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x0A, 0x40]


@dataclass
class Finding:
    target: str
    seed: int
    iteration: int
    data: bytes
    error: str
    trace: str


@dataclass
class Result:
    target: str
    iterations: int = 0
    allowed_errors: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    findings: list[Finding] = field(default_factory=list)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(11)
        n = len(buf)
        if op == 0 and n:                                  # flip one bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:                                # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:                                # boundary value
            buf[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 3:                                      # insert random bytes
            i = rng.randint(0, n)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and n:                                # delete a range
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, 16)]
        elif op == 5 and n:                                # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            k = rng.randint(0, n)
            buf[k:k] = buf[i:j]
        elif op == 6 and n:                                # truncate
            del buf[rng.randrange(n):]
        elif op == 7 and corpus:                           # splice with another input
            other = rng.choice(corpus)
            i = rng.randint(0, n)
            j = rng.randint(0, len(other))
            buf = buf[:i] + other[j:]
        elif op == 8 and n >= 2:                           # a huge 16/32-bit length field
            i = rng.randrange(n - 1)
            buf[i:i + 2] = rng.choice((b"\xff\xff", b"\x00\x00", b"\x7f\xff", b"\x80\x00"))
        elif op == 9 and n:                                # a long varint
            i = rng.randrange(n)
            buf[i:i] = b"\xff" * rng.randint(1, 10) + b"\x01"
        elif op == 10:                                     # repeat the whole input
            buf = buf * rng.randint(2, 4)
    return bytes(buf)


def generate(target: Target, rng: random.Random) -> bytes:
    if not target.corpus or rng.random() < 0.2:
        return rng.randbytes(rng.randint(0, target.max_random))
    return mutate(rng.choice(target.corpus), rng, target.corpus)


def run_one(target: Target, data: bytes, seed: int) -> BaseException | None:
    """Feed one input; return the exception that is a finding, or None."""
    try:
        target.run(data, random.Random(seed))
    except target.allowed:
        return None
    except RecursionError as exc:  # never allowed, even if a subclass of an allowed type
        return exc
    except Exception as exc:  # noqa: BLE001 - everything else is a finding
        return exc
    return None


def fuzz_target(target: Target, iterations: int, seed: int, *,
                slow: float = 2.0, max_findings: int = 10) -> Result:
    result = Result(target.name)
    rng = random.Random(f"{target.name}:{seed}")
    start = time.perf_counter()
    for i in range(iterations):
        data = generate(target, rng)
        feed_seed = rng.randrange(1 << 32)
        t0 = time.perf_counter()
        try:
            target.run(data, random.Random(feed_seed))
        except target.allowed as exc:
            if isinstance(exc, RecursionError):
                _record(result, target, seed, i, data, exc)
            else:
                result.allowed_errors += 1
        except Exception as exc:  # noqa: BLE001
            _record(result, target, seed, i, data, exc)
        took = time.perf_counter() - t0
        result.slowest = max(result.slowest, took)
        if took > slow:
            _record(result, target, seed, i, data,
                    TimeoutError(f"one input took {took:.2f} s (> {slow} s)"))
        result.iterations += 1
        if len(result.findings) >= max_findings:
            break
    result.seconds = time.perf_counter() - start
    return result


def _record(result: Result, target: Target, seed: int, i: int, data: bytes,
            exc: BaseException) -> None:
    result.findings.append(Finding(target.name, seed, i, data,
                                   f"{type(exc).__name__}: {exc}"[:300],
                                   "".join(traceback.format_exception(exc))[-3000:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append",
                        help="target name (repeatable; default: all)")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None,
                        help="default: random (printed, so a run can be repeated)")
    parser.add_argument("--slow", type=float, default=2.0,
                        help="seconds one input may take before it counts as a finding")
    parser.add_argument("--save", action="store_true", help="save findings under fuzz/findings")
    parser.add_argument("--replay", metavar="FILE", help="feed one saved input to --target")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)

    targets = build_targets()
    if args.list:
        for name, t in targets.items():
            print(f"{name:22} corpus={len(t.corpus):2} allowed="
                  f"{','.join(e.__name__ for e in t.allowed) or '-'}")
        return 0
    names = args.target or list(targets)
    unknown = [n for n in names if n not in targets]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; see --list")

    if args.replay:
        data = Path(args.replay).read_bytes()
        for name in names:
            exc = run_one(targets[name], data, 0)
            print(f"{name}: {'OK' if exc is None else ''.join(traceback.format_exception(exc))}")
        return 0

    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"seed {seed}, {args.iterations} iterations per target")
    total_findings = 0
    for name in names:
        res = fuzz_target(targets[name], args.iterations, seed, slow=args.slow)
        total_findings += len(res.findings)
        rate = res.iterations / res.seconds if res.seconds else 0.0
        print(f"{name:22} {res.iterations:8} inputs  {res.allowed_errors:8} rejected  "
              f"{rate:9.0f}/s  slowest {res.slowest * 1000:6.1f} ms  "
              f"findings {len(res.findings)}", flush=True)
        for f in res.findings:
            print(f"  FINDING {f.target} seed={f.seed} iteration={f.iteration}: {f.error}")
            print(f"    input ({len(f.data)} bytes): {f.data[:96].hex()}")
            print("    " + f.trace.replace("\n", "\n    "))
            if args.save:
                out = Path(__file__).resolve().parent / "findings"
                out.mkdir(exist_ok=True)
                (out / f"{f.target}-{f.seed}-{f.iteration}.bin").write_bytes(f.data)
    print(f"total findings: {total_findings}")
    return 1 if total_findings else 0


if __name__ == "__main__":
    sys.exit(main())
