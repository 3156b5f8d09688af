"""Turn a JUnit XML report of test_interop_matrix.py into the README's interop tables.

    python3 -m pytest tests/interop/test_interop_matrix.py --junitxml=interop.xml
    python3 tests/interop/report.py interop.xml

Two tables: TCP + Noise over both muxers (``test_we_dial``/``test_they_dial``), then the
other stacks over yamux (``test_we_dial_stack``/``test_they_dial_stack``).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

CELL = re.compile(r"test_(we_dial|they_dial)\[(js|py)-(yamux|mplex)-(\w+)\]")
STACK_CELL = re.compile(r"test_(we_dial|they_dial)_stack\[(js|py)-(\w+-\w+)-(\w+)\]")
DIRECTION = {"we_dial": "we dial them", "they_dial": "they dial us"}

Table = dict[tuple[str, str, str], dict[str, str]]


def _mark(case: ET.Element) -> str:
    if any(child.tag == "skipped" for child in case):
        return "skipped"
    return "FAIL" if any(child.tag in ("failure", "error") for child in case) else "✓"


def cells(path: str, pattern: re.Pattern = CELL) -> Table:
    """(peer, direction, muxer or stack) -> {scenario: mark} for the cells ``pattern``
    names (:data:`CELL` or :data:`STACK_CELL`)."""
    table: Table = {}
    for case in ET.parse(path).iter("testcase"):
        match = pattern.fullmatch(case.get("name", ""))
        if not match:
            continue
        direction, peer, column, scenario = match.groups()
        table.setdefault((peer, DIRECTION[direction], column), {})[scenario] = _mark(case)
    return table


def markdown(table: Table, column: str = "muxer") -> str:
    scenarios: list[str] = []
    for row in table.values():
        scenarios += [s for s in row if s not in scenarios]
    lines = [f"| peer | direction | {column} | " + " | ".join(scenarios) + " |",
             "|---|---|---|" + "---|" * len(scenarios)]
    for (peer, direction, name), row in sorted(table.items()):
        lines.append(f"| {peer} | {direction} | {name} | "
                     + " | ".join(row.get(s, "–") for s in scenarios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(cells(sys.argv[1])))
    stacks = cells(sys.argv[1], STACK_CELL)
    if stacks:
        print("\nOver yamux, the other stacks:\n")
        print(markdown(stacks, "stack"))
