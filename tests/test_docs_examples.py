"""docs/own_code.md's Python blocks run as written, each on its own ("bnnns from your own
code": pure functions, NNX with nnx.Optimizer, the linen layers under nnx.bridge, Bop)."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks(name: str) -> list[str]:
    with open(os.path.join(ROOT, "docs", name)) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


BLOCKS = _blocks("own_code.md")


def test_own_code_has_its_examples():
    assert len(BLOCKS) == 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_own_code_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"docs/own_code.md block {index}", "exec"), {})  # noqa: S102
    assert capsys.readouterr().out  # each block prints what it shows
