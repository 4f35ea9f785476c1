"""Import paths from before the package was split into rooms (docs/architecture.md).

``import bnnns.train_lib``, ``from bnnns.layers import drop_sown`` and
``python -m bnnns.export`` keep working: a finder at the front of ``sys.meta_path`` maps each
old name (and anything under it, e.g. ``bnnns.models.common``) to the one module at its new
path, never a second copy, and says where it moved with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

_ROOMS = {
    "core": "estimators losses mapping scaling metrics packing binary_ops",
    "nn": "layers models",
    "train": "train_lib steps stage_init optim checkpointing workdir default_config "
    "config_checks sharding metric_writer",
    "deploy": "artifact export inference predict summary",
}
MOVED: dict[str, str] = {
    f"bnnns.{name}": f"bnnns.{room}.{name}"
    for room, names in _ROOMS.items()
    for name in names.split()
}
MOVED.update(
    {"bnnns.bench_deploy": "bnnns.bench.deploy", "bnnns.stability": "bnnns.bench.stability"}
)


def new_name(fullname: str) -> str | None:
    """The current module path of an old one (``bnnns.models.common`` ->
    ``bnnns.nn.models.common``), or None if ``fullname`` did not move."""
    for old, new in MOVED.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old) :]
    return None


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        warnings.warn(
            f"{module.__name__} moved to {self.new}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        # the import system returns what sys.modules holds after exec_module: the real module
        sys.modules[module.__name__] = importlib.import_module(self.new)

    def get_code(self, fullname: str):  # ``python -m OLD`` runs the new module's code
        spec = importlib.util.find_spec(new_name(fullname) or fullname)
        return spec.loader.get_code(spec.name)


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        target_spec = importlib.util.find_spec(new)
        return importlib.machinery.ModuleSpec(
            fullname,
            _MovedModuleLoader(new),
            origin=target_spec.origin,  # runpy's sys.argv[0]
            is_package=target_spec.submodule_search_locations is not None,
        )


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
