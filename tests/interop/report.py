"""Turn a JUnit XML report of test_interop_matrix.py into the README's interop table.

    python3 -m pytest tests/interop/test_interop_matrix.py --junitxml=interop.xml
    python3 tests/interop/report.py interop.xml
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

CELL = re.compile(r"test_(we_dial|they_dial)\[(js|py)-(yamux|mplex)-(\w+)\]")
DIRECTION = {"we_dial": "we dial them", "they_dial": "they dial us"}


def cells(path: str) -> dict[tuple[str, str, str], dict[str, str]]:
    table: dict[tuple[str, str, str], dict[str, str]] = {}
    for case in ET.parse(path).iter("testcase"):
        match = CELL.fullmatch(case.get("name", ""))
        if not match:
            continue
        direction, peer, muxer, scenario = match.groups()
        failed = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        mark = "skipped" if skipped else ("FAIL" if failed else "✓")
        table.setdefault((peer, DIRECTION[direction], muxer), {})[scenario] = mark
    return table


def markdown(table: dict[tuple[str, str, str], dict[str, str]]) -> str:
    scenarios = sorted({s for row in table.values() for s in row},
                       key=lambda s: list(next(iter(table.values()))).index(s)
                       if s in next(iter(table.values())) else 99)
    lines = ["| peer | direction | muxer | " + " | ".join(scenarios) + " |",
             "|---|---|---|" + "---|" * len(scenarios)]
    for (peer, direction, muxer), row in sorted(table.items()):
        lines.append(f"| {peer} | {direction} | {muxer} | "
                     + " | ".join(row.get(s, "–") for s in scenarios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(cells(sys.argv[1])))
