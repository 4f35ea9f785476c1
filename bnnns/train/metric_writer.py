"""Per-epoch metrics to JSON lines and TensorBoard event files (process 0 only)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["MetricWriter", "read_metrics"]


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The records of ``<workdir>/metrics.jsonl`` in the order written ([] if there is none)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a last line cut short by a killed run: not a record
                break
            raise
    return records


def _scalars(record: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_scalars(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class MetricWriter:
    """Appends one JSON object per record to ``<workdir>/metrics.jsonl`` and writes the numeric
    fields as TensorBoard scalars under ``<workdir>/tensorboard``. Does nothing when
    ``enabled`` is false (processes other than 0)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled, self.workdir = enabled, workdir
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, stage: str, step: int) -> None:
        """Drop records of ``stage`` logged after ``step`` (work redone after a resume), and
        a last line cut short by a killed run."""
        if not self.enabled:
            return
        records = read_metrics(self.workdir)
        keep = [r for r in records if not (r.get("stage") == stage and r.get("step", 0) > step)]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            if f.read() == text:
                return
        tmp = self.path + ".tmp"  # rewritten whole, then renamed: never half a file
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any], tb_step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        stage = record.get("stage", "")
        for name, value in _scalars(record).items():
            if name not in ("step", "epoch") and math.isfinite(value):
                self._tb.add_scalar(f"{stage}/{name}", value, tb_step)
        self._flush(self._tb.flush)

    def _flush(self, flush) -> None:
        """TensorBoard's write errors carry no file name: name the events directory."""
        try:
            flush()
        except OSError as e:
            if e.filename:
                raise
            raise OSError(e.errno, e.strerror, os.path.join(self.workdir, "tensorboard")) from e

    def close(self) -> None:
        if self._tb is not None:
            self._flush(self._tb.close)
