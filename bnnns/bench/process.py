"""Child processes and JSON lines: how the drivers run cases in fresh processes.

Every benchmark prints one JSON object per line (:func:`emit`); a driver runs each
configuration as a fresh ``python -m bnnns.bench --one ...`` process (:func:`child_cmd`,
:func:`run`) and reads the objects it printed back (:func:`parse_lines`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bnnns.bench.cases import Case

__all__ = ["REPO", "parse_lines", "run", "emit", "child_cmd"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_lines(text: str) -> list[dict[str, Any]]:
    """JSON objects printed by a child: bare ``{...}`` lines or peers' ``RESULT {...}`` /
    ``AB {...}`` lines; anything else is skipped."""
    out = []
    for line in text.splitlines():
        body = line.split(" ", 1)[1] if line.startswith(("RESULT ", "AB ")) else line
        if body.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(body))
    return out


def run(cmd: list[str], timeout: float) -> tuple[int, list[dict[str, Any]], str, float]:
    """Run ``cmd`` in the repository root.

    Returns:
        ``(returncode, JSON objects printed, stderr tail, wall seconds)``; returncode 124 on
        timeout.
    """
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        return 124, [], f"timeout after {timeout}s: {e}", time.perf_counter() - t0
    return p.returncode, parse_lines(p.stdout), p.stderr[-2000:], time.perf_counter() - t0


def emit(obj: dict[str, Any], out: str | None) -> None:
    """Print ``obj`` as one JSON line; also append it to the file ``out`` if given."""
    line = json.dumps(obj)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def child_cmd(cases: Sequence[Case], warmup: int, steps: int) -> list[str]:
    """The command that times ``cases`` together in one fresh process (``--one A,B``)."""
    c = cases[0]
    return [
        *(sys.executable, "-m", "bnnns.bench", "--one", ",".join(x.name for x in cases)),
        *("--batch", str(c.batch), "--image", str(c.image), "--width", str(c.width)),
        *("--warmup", str(warmup), "--steps", str(steps)),
    ]
