"""No class above the engines grows past ~400 lines (issue #13, "one job per class").

The engines, codecs and identity are sans-IO layers with their own purity test; above
them (reactor, connection, session, node, facade, protocols, adapters) a class that
passes the bound has taken a second job: split it (docs/ARCHITECTURE.md lists the parts).
Lines are counted as the AST sees a class: its first to its last line, docstrings
included.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "libp2p_stream_sync"
BELOW_THE_LINE = {"engines", "codec", "identity"}
MAX_CLASS_LINES = 400


def class_sizes() -> dict[str, int]:
    """``module:Class`` -> lines, for every class above the engines."""
    sizes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in BELOW_THE_LINE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{relative}:{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def test_the_measure_sees_the_big_classes() -> None:
    sizes = class_sizes()
    assert "connection.py:Connection" in sizes and "node.py:Node" in sizes
    assert all(not name.startswith("engines") for name in sizes)
    assert sizes["node.py:Node"] > 100  # measured, not a stub


def test_no_class_above_the_engines_is_over_400_lines() -> None:
    too_big = {name: n for name, n in class_sizes().items() if n > MAX_CLASS_LINES}
    assert not too_big, f"classes over {MAX_CLASS_LINES} lines: {too_big}"
