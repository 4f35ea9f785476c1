"""The native CPU kernels: built on first use with the system C++ compiler, then registered.

``xnor_conv.cc`` (with ``xnor_body.inc``) is an XLA FFI custom call (``jax.ffi``): the
XNOR-popcount binary convolution of :func:`bnnns.core.xnor_conv.xnor_conv`; ``conv_dw.cc`` the
convolution weight gradient of :func:`bnnns.core.conv_dw.weight_grad` (both split work over XLA's
pool with ``parallel_for.h``). They are compiled into one library against the running jaxlib's
FFI headers (``jax.ffi.include_dir()``) into a cache folder
(``$BNNNS_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/bnnns`` or ``~/.cache/bnnns``), keyed by a hash
of the sources, the flags, the compiler and the jax version, so the next process loads it in
milliseconds. One shared library serves every x86-64 CPU: the XNOR loops are built for AVX-512
VPOPCNTDQ, for AVX2 + POPCNT and as portable C++, and the best the CPU runs is chosen at run
time (:data:`ISAS`; ``$BNNNS_XNOR_ISA`` or a caller may ask for a lower one); the weight
gradient's for AVX-512F, AVX2 + FMA and portable C++, chosen the same way. Without a
compiler (or with ``BNNNS_NATIVE=0``) :func:`status` says why the kernel is unavailable and
callers use the pure-JAX path.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import jax

__all__ = ["CONV_DW_TARGET", "ISAS", "NativeStatus", "status", "XNOR_CONV_TARGET"]

XNOR_CONV_TARGET = "bnnns_xnor_conv"
CONV_DW_TARGET = "bnnns_conv_dw"
# The kernel's builds, by the number it takes (``isa``) and reports (``bnnns_xnor_best_isa``).
ISAS = ("portable", "avx2", "avx512")
_ISA_DETAIL = {"portable": "portable C++", "avx2": "AVX2+POPCNT", "avx512": "AVX-512 VPOPCNTDQ"}
ISA_ENV = "BNNNS_XNOR_ISA"
_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = ("xnor_conv.cc", "xnor_body.inc", "conv_dw.cc", "conv_dw_micro.inc", "parallel_for.h")
_UNITS = ("xnor_conv.cc", "conv_dw.cc")  # compiled into one library
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-w")
_COMPILERS = ("c++", "g++", "clang++")
_BUILD_TIMEOUT_S = 300
_LOCK = threading.Lock()
_STATUS: NativeStatus | None = None


@dataclasses.dataclass(frozen=True)
class NativeStatus:
    """Whether the native kernel is registered: ``available``, the library ``path``, a
    ``detail`` (the build it runs, or why it is unavailable), ``isa``: that build (one of
    :data:`ISAS`: the best this CPU runs, or ``$BNNNS_XNOR_ISA``) and ``runnable``: the builds
    this CPU runs."""

    available: bool
    detail: str
    path: str | None = None
    isa: str | None = None
    runnable: tuple[str, ...] = ()


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return next((p for p in map(shutil.which, _COMPILERS) if p), None)


def _cache_dir() -> str:
    base = os.environ.get("BNNNS_KERNEL_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "bnnns")
    try:
        os.makedirs(base, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    fallback = os.path.join(tempfile.gettempdir(), f"bnnns-{os.getuid()}")
    os.makedirs(fallback, exist_ok=True)
    return fallback


def _build(cxx: str) -> str:
    """Compile into the cache (atomically: a temporary file, then ``os.replace``); the path."""
    include = jax.ffi.include_dir()
    digest = hashlib.sha256()
    for name in _SOURCES:
        with open(os.path.join(_HERE, name), "rb") as f:
            digest.update(f.read())
    digest.update(repr((_FLAGS, cxx, jax.__version__, include)).encode())
    folder = _cache_dir()
    path = os.path.join(folder, f"xnor_conv-{digest.hexdigest()[:16]}.so")
    if os.path.isfile(path):
        return path
    fd, tmp = tempfile.mkstemp(prefix=".xnor_conv-", suffix=".so", dir=folder)
    os.close(fd)
    units = [os.path.join(_HERE, name) for name in _UNITS]
    cmd = [cxx, *_FLAGS, f"-I{include}", *units, "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise RuntimeError(f"{os.path.basename(cxx)} failed: {lines[-1][:300]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _load() -> NativeStatus:
    if os.environ.get("BNNNS_NATIVE", "1") == "0":
        return NativeStatus(False, "disabled by BNNNS_NATIVE=0")
    wanted = os.environ.get(ISA_ENV)
    if wanted and wanted not in ISAS:
        return NativeStatus(False, f"{ISA_ENV}={wanted!r} is not one of {ISAS}")
    cxx = _compiler()
    if cxx is None:
        return NativeStatus(False, f"no C++ compiler found ($CXX or one of {_COMPILERS})")
    try:
        path = _build(cxx)
        lib = ctypes.cdll.LoadLibrary(path)
        targets = ((XNOR_CONV_TARGET, lib.BnnnsXnorConv), (CONV_DW_TARGET, lib.BnnnsConvDw))
        for target, symbol in targets:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform="cpu")
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
        return NativeStatus(False, f"native kernel unavailable: {e}")
    _load.lib = lib  # keep the library loaded for the process
    runnable = ISAS[: int(lib.bnnns_xnor_best_isa()) + 1]
    isa = wanted or runnable[-1]
    if isa not in runnable:
        return NativeStatus(False, f"{ISA_ENV}={isa!r}: this CPU runs only {runnable}")
    detail = _ISA_DETAIL[isa] + (f", by {ISA_ENV}" if isa != runnable[-1] else "")
    return NativeStatus(True, detail, path, isa, runnable)


def status() -> NativeStatus:
    """Build (first call only), load and register the kernel; then its :class:`NativeStatus`."""
    global _STATUS
    with _LOCK:
        if _STATUS is None:
            _STATUS = _load()
        return _STATUS
