"""Faults a careful user finds through ``train.py`` (docs/reliability.md): a full disk, a
read-only workdir, a mistyped ``--config.`` flag. Each is one ``error:`` line naming the file,
field or directory, exit status 2, no traceback; after a full disk is freed the rerun resumes
from the newest intact checkpoint, leaves no unfinished save behind and ends where an
uninterrupted run ends.

The disk is a real tmpfs, mounted in a private mount namespace (``unshare -rm``: root, or an
unprivileged user where user namespaces are enabled). Where that is refused, an unprivileged
``chmod`` makes the read-only workdir, and the full-disk case is skipped (it needs a real
file system that fills: orbax writes through tensorstore's C++, out of Python's reach)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_npz(path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (80, 8, 8), dtype=np.uint8)
    y = np.arange(80) % 10
    np.savez(path, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    return path


def train_args(npz, workdir, *extra):
    """Pretrain a width-4 CNN on 64 8x8 images: 2 epochs of 2 steps, a checkpoint per step."""
    return [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config",
        os.path.join(ROOT, "configs", "mnist_lns.py"),
        f"--workdir={workdir}",
        f"--config.dataset=npz:{npz}",
        "--config.stages=pretrain",
        "--config.train_subset=0",
        "--config.model.width=4",
        "--config.batch_size=32",
        "--config.pretrain.epochs=2",
        "--config.progress_bar=False",
        "--config.pretrain.schedule=constant",  # a longer rerun trains as one run
        "--config.checkpoint_every_steps=1",
        *extra,
    ]


def env():
    return dict(os.environ, PYTHONPATH=ROOT)


def can_mount():
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


MOUNTABLE = can_mount()


def assert_one_line_error(done, *needles):
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert all(n in errors[0] for n in needles), errors[0]
    # no absl ERROR records (orbax's background-thread tracebacks): "E1201 12:00:00.0 ..."
    logged = [ln for ln in done.stderr.splitlines() if ln[:1] == "E" and ln[1:5].isdigit()]
    assert not logged, logged
    return errors[0]


def test_mistyped_config_flag_is_one_line_with_did_you_mean(tmp_path):
    for flag, needles in (
        ("--config.num_seed=3", ("--config.num_seed", "did you mean 'num_seeds'?")),
        ("--config.lns.alpah=0.5", ("config.lns.alpah is not a config field", "'alpha'")),
    ):
        done = subprocess.run(
            [*train_args("unused.npz", tmp_path / "w"), flag],
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_one_line_error(done, "mnist_lns.py", *needles)
    assert not (tmp_path / "w").exists()


# Runs inside ``unshare -rm``: mounts DIR as a tmpfs of SIZE (read-only if SIZE is "ro"), runs
# the steps given as JSON (train.py arguments; "fill:N": a file that leaves N bytes free;
# "free": remove it; "snapshot"), writes each run's {rc, stdout, stderr} and copies DIR to OUT.
NAMESPACE = textwrap.dedent(
    """
    import json, os, shutil, subprocess, sys
    directory, size, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    os.makedirs(directory, exist_ok=True)
    options = "ro,size=64k" if size == "ro" else f"size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", directory], check=True)
    filler = os.path.join(directory, "filler")
    results = []
    for step in steps:
        if isinstance(step, str) and step.startswith("fill:"):
            fs = os.statvfs(directory)
            with open(filler, "wb") as f:
                f.write(bytes(max(fs.f_bavail * fs.f_frsize - int(step[5:]), 0)))
        elif step == "free":
            os.remove(filler)
        elif step == "snapshot":
            shutil.copytree(directory, os.path.join(out, "snapshot"))
        else:
            done = subprocess.run(step, capture_output=True, text=True)
            results.append({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr})
    shutil.copytree(directory, os.path.join(out, "disk"))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f)
    """
)


def in_namespace(tmp_path, size, runs):
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", NAMESPACE]
        + [str(tmp_path / "disk"), size, str(out), json.dumps(runs)],
        env=env(),
        check=True,
        timeout=900,
    )
    results = json.loads((out / "results.json").read_text())
    return [subprocess.CompletedProcess([], r["rc"], r["stdout"], r["stderr"]) for r in results]


def finished_steps(directory):
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def newest_arrays(directory):
    step = finished_steps(directory)[-1]
    return ocp.PyTreeCheckpointer().restore(str(directory / str(step) / "state"))


@pytest.mark.slow
@pytest.mark.skipif(not MOUNTABLE, reason="needs unshare -rm to mount a tmpfs")
@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_full_disk_is_one_line_and_the_rerun_resumes(tmp_path):
    """One epoch trains on a tmpfs; then the disk is filled to 40 kB free (less than a
    checkpoint) and a longer schedule started: it fails writing its first checkpoint, in one
    line that names the file and the checkpoints kept. The disk is freed and the same command
    rerun: it resumes, leaves no ``*.orbax-checkpoint-tmp`` and ends with the weights and
    records of an uninterrupted run."""
    npz = tiny_npz(tmp_path / "tiny.npz")
    workdir = tmp_path / "disk" / "w"
    first, longer = train_args(npz, workdir, "--config.pretrain.epochs=1"), train_args(npz, workdir)
    steps = [first, "fill:40000", longer, "snapshot", "free", longer]
    done, full, rerun = in_namespace(tmp_path, "2m", steps)
    assert done.returncode == 0, done.stderr[-3000:]
    line = assert_one_line_error(full, f"workdir {workdir}: the disk is full", "free space")
    assert f"writing {workdir}" in line or f"writing into {workdir}" in line
    assert "checkpoints: pretrain step 2" in line, line
    snapshot = tmp_path / "out" / "snapshot" / "w" / "checkpoints" / "pretrain"
    assert finished_steps(snapshot) == [1, 2]  # nothing saved before was lost
    assert any("orbax-checkpoint-tmp" in p.name for p in snapshot.iterdir())  # the cut save
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "unusable" not in rerun.stdout  # the kept checkpoints were intact
    ckpt = tmp_path / "out" / "disk" / "w" / "checkpoints" / "pretrain"
    assert [p.name for p in ckpt.iterdir() if "tmp" in p.name] == []
    assert finished_steps(ckpt) == [3, 4]
    straight = tmp_path / "straight"
    done = subprocess.run(train_args(npz, straight), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected, actual = newest_arrays(straight / "checkpoints" / "pretrain"), newest_arrays(ckpt)
    jax.tree.map(np.testing.assert_array_equal, expected, actual)
    records = [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in (tmp_path / "out" / "disk" / "w" / "metrics.jsonl").read_text().splitlines()
    ]
    want = [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in (straight / "metrics.jsonl").read_text().splitlines()
    ]
    assert records == want


@pytest.mark.skipif(
    not MOUNTABLE and os.geteuid() == 0, reason="root writes anywhere: needs a read-only mount"
)
def test_read_only_workdir_is_one_line(tmp_path):
    npz = tiny_npz(tmp_path / "tiny.npz")
    if MOUNTABLE:
        workdir = tmp_path / "disk" / "w"
        (done,) = in_namespace(tmp_path, "ro", [train_args(npz, workdir)])
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        workdir = parent / "w"
        try:
            done = subprocess.run(
                train_args(npz, workdir), env=env(), capture_output=True, text=True
            )
        finally:
            parent.chmod(0o755)
    assert_one_line_error(done, f"workdir {workdir}", str(workdir), "use a writable workdir")
