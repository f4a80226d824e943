"""The README's Python examples run as written (the long ones behind the ``slow`` marker)."""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _blocks() -> list[str]:
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _cases():
    out = []
    for i, block in enumerate(_blocks()):
        slow = block.lstrip().startswith("# slow")
        marks = [pytest.mark.slow] if slow else []
        out.append(pytest.param(block, id=f"block{i}", marks=marks))
    return out


def test_readme_has_python_examples():
    assert len(_blocks()) >= 4


@pytest.mark.parametrize("block", _cases())
def test_readme_example_runs(block, tmp_path):
    """Each block in a fresh interpreter (its own imports), in a scratch directory."""
    env = dict(os.environ, TQDM_DISABLE="1")
    r = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
