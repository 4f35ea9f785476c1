"""The README's Python examples run as written and print what the comments say."""

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_examples_run_and_match_comments():
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    # Lines "expr  # [values]" must evaluate to those values.
    checked = 0
    for block in blocks:
        for line in block.splitlines():
            m = re.match(r"^(\S.*?)\s+#\s*(\[[-0-9., ]+\])", line)
            if m:
                got = np.asarray(eval(m.group(1), namespace), float)  # noqa: S307
                np.testing.assert_allclose(got, eval(m.group(2)), err_msg=line)
                checked += 1
    assert checked >= 4
