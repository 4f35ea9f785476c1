"""The package's layering (docs/architecture.md): every import of bnnns by bnnns points down.

The rules are read from the source (``ast``), not from what happens to be imported at run time,
so an import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "bnnns")

# room -> the rooms its modules may import (besides its own and the shared ``bnnns.errors``)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "nn": {"core"},
    "data": set(),
    "train": {"core", "nn", "data"},
    "deploy": {"core", "nn", "data", "train"},
    "bench": {"core", "nn", "data", "train", "deploy"},
    "experiments": {"core", "nn", "data", "train", "deploy"},
    # the package itself: the public API and the aliases of the old module paths
    "bnnns": {"core", "nn", "_compat", "_xla_cpu", "nnx"},
    "nnx": {"nn"},  # bnnns.nnx: the NNX layers under one name
    "_compat": set(),
    "_xla_cpu": set(),  # XLA:CPU flags, set on import (issue 17)
    "errors": set(),
}
SHARED = {"errors"}
MAX_LINES = 400
LONG_MODULE_REASON = "Longer than 400 lines:"  # what a longer module's docstring must say


def room_of_module(name: str) -> str:
    """``bnnns.nn.models.common`` -> ``nn``; ``bnnns`` -> ``bnnns``."""
    parts = name.split(".")
    assert parts[0] == "bnnns", name
    return parts[1] if len(parts) > 1 else "bnnns"


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, bnnns module)`` for every import of bnnns in ``source`` (module ``module``,
    for relative imports); ``from bnnns import x`` counts as importing ``bnnns.x``."""
    out = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bnnns"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] != "bnnns":
                continue
            if base == "bnnns":
                out += [(node.lineno, f"bnnns.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def upward_imports(source: str, module: str) -> list[str]:
    """The imports in ``source`` (the code of ``module``) that break :data:`ALLOWED`."""
    room = room_of_module(module)
    bad = []
    for line, target in imported_modules(source, module):
        target_room = room_of_module(target)
        if target_room in (room, *SHARED) or target_room in ALLOWED[room]:
            continue
        if target_room not in ALLOWED:  # an attribute of the package (``from bnnns import sign``)
            target_room = "bnnns"
            if room == "bnnns":
                continue
        bad.append(f"{module}:{line} imports {target} ({room} -> {target_room})")
    return bad


def package_modules() -> dict[str, str]:
    """``{dotted name: path}`` of every module of the package."""
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = os.path.join(root, f)
    return modules


def test_every_room_is_known():
    rooms = {room_of_module(m) for m in package_modules()}
    assert rooms == set(ALLOWED), rooms ^ set(ALLOWED)


def test_no_upward_imports():
    bad = []
    for module, path in sorted(package_modules().items()):
        with open(path) as f:
            bad += upward_imports(f.read(), module)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("bnnns.core.losses", "from bnnns.nn.layers import BinaryConv", 1),
        ("bnnns.core.losses", "def f():\n    import bnnns.train.steps", 1),
        ("bnnns.core.losses", "from bnnns import sign", 1),  # the package sits above core
        ("bnnns.core.losses", "from ..nn import layers", 1),
        ("bnnns.core.losses", "from bnnns.core.estimators import sign", 0),
        ("bnnns.core.losses", "from .estimators import sign", 0),
        ("bnnns.nn.layers", "from bnnns.data import pipeline", 1),
        ("bnnns.data.npz", "from bnnns.errors import DataError", 0),
        ("bnnns.train.train_lib", "from bnnns.bench import timing", 1),
        ("bnnns.deploy.export", "from bnnns import experiments", 1),
        ("bnnns.deploy.export", "from bnnns.train import train_lib", 0),
        ("bnnns.bench.step", "from bnnns.experiments import runner", 1),
    ],
)
def test_checker_catches_upward_imports(module, source, expected):
    assert len(upward_imports(source, module)) == expected


def test_modules_are_small_or_say_why():
    long = []
    for module, path in sorted(package_modules().items()):
        with open(path) as f:
            source = f.read()
        lines = source.count("\n")
        doc = ast.get_docstring(ast.parse(source)) or ""
        if lines > MAX_LINES and LONG_MODULE_REASON not in doc:
            long.append(f"{module}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines without a reason in the docstring: {long}"
