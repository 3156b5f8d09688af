"""The README's API example runs as written."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_api_example_runs():
    blocks = python_blocks()
    assert blocks, "the README has no python example"
    result = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["b'hello, libp2p'", "refused: /unknown/1.0.0"]
