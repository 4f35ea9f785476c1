"""Train-step benchmark: step time, compile time, memory and LNS overhead; peers side by side.

    python -m bnnns.bench                       # resnet20 (b128) + birealnet18 (b8): float/sign/lns
    python -m bnnns.bench --quick               # CI-sized, under 3 minutes on 2 CPU cores
    python -m bnnns.bench --peers --rounds 3    # vs Larq / PyTorch / naive JAX, interleaved
    python -m bnnns.bench --deploy              # artifact size, predict vs eval (bench_deploy)
    python -m bnnns.bench --mapping-ab          # birealnet18 mapping nets: new vs reference
    python -m bnnns.bench --costs               # mapping FLOPs / time share per model
    python -m bnnns.bench --gpu-step            # birealnet18 ImageNet step on an accelerator

Prints one JSON object per line (``kind``: ``step``, ``pair``, ``summary``, ``error``,
``peer_run``, ``peer_summary``, ``target``, ``mapping_ab``, ``cost``, ``gpu_step``);
docs/bench.md explains every field. Each configuration runs in a fresh process (``--one``) so
that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from bnnns.core.estimators import sign, ste_sign
from bnnns.core.losses import lns_loss
from bnnns.core.mapping import FilterBankNorm, MappingNet, filters_to_kernel, kernel_to_filters
from bnnns.nn import layers as layers_lib
from bnnns.nn.layers import _BinaryWeights
from bnnns.nn.models import MODELS as MODEL_ZOO
from bnnns.nn.models import BinaryOptions, BiRealNet18, ResNet20
from bnnns.train.stage_init import fresh_state
from bnnns.train.steps import train_step

__all__ = ["Case", "build", "run_cases", "main"]

LR, MOMENTUM = 0.05, 0.9  # as the peers (/work/shared/peers/common.py)
# Weight of the sown LNS losses. Any alpha > 0 costs the same; the recipes' 1.0 with the sum
# reduction diverges to NaN within a few steps at lr 0.05 from a random (not warm-started) init;
# 1e-6 keeps every benchmarked model finite over the timed steps.
LNS_ALPHA = 1e-6
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
MODELS = ("resnet20", "resnet20_peer", "birealnet18")  # and any name in bnnns.nn.models.MODELS
# lns_bf16: LNS with lns.mapping_dtype="bfloat16"; lns_ref: LNS with ReferenceMappingNet.
BINARIZERS = ("float", "sign", "lns", "lns_bf16", "lns_ref")
LNS_BINARIZERS = ("lns", "lns_bf16", "lns_ref")
# A model of the zoo without a recipe here: ImageNet shapes (batch, image, width) and classes.
ZOO_DEFAULTS = {"full": (8, 224, 64), "quick": (2, 64, 16)}
MIB = 1024.0 * 1024.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The peer scripts: $BNNNS_PEERS, else shared/peers beside the repository (/work/shared/peers).
PEERS_DIR = os.environ.get("BNNNS_PEERS", os.path.join(os.path.dirname(REPO), "shared", "peers"))
PEERBENCH = os.environ.get("PEERBENCH", os.path.expanduser("~/peerbench"))
# (batch, image size, base width) per model, for the full run and for --quick.
DEFAULTS: dict[str, dict[str, tuple[int, int, int]]] = {
    "resnet20": {"full": (128, 32, 16), "quick": (128, 32, 16)},
    "resnet20_peer": {"full": (128, 32, 16), "quick": (128, 32, 16)},
    "birealnet18": {"full": (8, 224, 64), "quick": (2, 64, 16)},
}


class ReferenceMappingNet(nn.Module):
    """The mapping network as it was before issue 11, kept verbatim as the benchmarks'
    reference: ``nn.Conv`` (plain ``lax`` conv over the padded 3x3 images) with a bias on all
    three convs. Same function as :class:`bnnns.MappingNet` (the pre-norm biases cancel in
    FilterBankNorm); its parameter tree has the two extra ``bias`` leaves."""

    residual: bool = False
    dtype: Any = None  # compute dtype; None = the kernel's dtype

    @nn.compact
    def __call__(self, kernel: jax.Array) -> jax.Array:
        filters = kernel_to_filters(kernel)
        dtype = self.dtype or kernel.dtype
        c = filters.shape[-1]
        conv = lambda features, **kw: nn.Conv(  # noqa: E731
            features, (3, 3), padding="SAME", dtype=dtype, param_dtype=jnp.float32, **kw
        )
        h = filters.astype(dtype)
        h = nn.relu(FilterBankNorm()(conv(2 * c)(h)))
        h = nn.relu(FilterBankNorm()(conv(2 * c)(h)))
        last_init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
        out = conv(c, kernel_init=last_init)(h)
        if self.residual:
            out = filters.astype(out.dtype) + out
        return filters_to_kernel(out, kernel.ndim).astype(kernel.dtype)


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration to time: ``model`` x ``binarizer`` at ``batch`` and ``image`` size."""

    model: str
    binarizer: str
    batch: int
    image: int
    width: int

    @property
    def name(self) -> str:
        return f"{self.model}:{self.binarizer}"


def binary_options(model: str, binarizer: str) -> BinaryOptions:
    """Binarization of ``model``: the repo's recipes, or the peers' model for resnet20_peer."""
    if binarizer not in BINARIZERS:
        raise ValueError(f"binarizer must be one of {BINARIZERS}, got {binarizer!r}")
    lns = binarizer in LNS_BINARIZERS
    if model == "resnet20":  # configs/cifar10_resnet20_{pretrain,lns}.py
        opts = BinaryOptions(weight_scale="layer", weight_ste="identity")
    elif model == "resnet20_peer":  # /work/shared/peers/common.py: clipped STE, no scale
        opts = BinaryOptions(weight_scale="none", weight_ste="clipped")
    elif model == "birealnet18":  # configs/imagenet_birealnet18_{pretrain,lns}.py
        ste = "identity" if lns else "clipped"
        opts = BinaryOptions(activation="approx_sign", weight_scale="channel", weight_ste=ste)
    elif model in MODEL_ZOO:  # another model of the zoo: its own defaults
        opts = BinaryOptions()
    else:
        raise ValueError(f"model must be one of {(*MODELS, *sorted(MODEL_ZOO))}, got {model!r}")
    if binarizer == "float":
        return dataclasses.replace(opts, activation="none")
    dtype = "bfloat16" if binarizer == "lns_bf16" else "float32"
    return dataclasses.replace(opts, weight_binarizer="lns" if lns else "sign", mapping_dtype=dtype)


def _defaults(model: str, size: str) -> tuple[int, int, int]:
    """``(batch, image, width)`` of ``model`` for ``size`` (``"full"`` or ``"quick"``)."""
    if model in DEFAULTS:
        return DEFAULTS[model][size]
    binary_options(model, "sign")  # the clear error for an unknown model
    return ZOO_DEFAULTS[size]


def build(case: Case) -> tuple[nn.Module, tuple[int, int, int], int]:
    """``(model, image shape HWC, number of classes)`` of a case."""
    opts = binary_options(case.model, case.binarizer)
    shape = (case.image, case.image, 3)
    if case.model == "birealnet18":
        return BiRealNet18(num_classes=1000, width=case.width, binary=opts), shape, 1000
    if case.model not in ("resnet20", "resnet20_peer"):  # the zoo's model at ImageNet shapes
        cls = MODEL_ZOO[case.model]
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {"width": case.width} if "width" in fields else {}
        return cls(num_classes=1000, binary=opts, **kw), shape, 1000
    kwargs = {"block": "classic", "shortcut": "B"} if case.model == "resnet20_peer" else {}
    return ResNet20(num_classes=10, width=case.width, binary=opts, **kwargs), shape, 10


@contextlib.contextmanager
def real_weights(enabled: bool = True) -> Iterator[None]:
    """While active (tracing), every binary layer computes with its latent weights W as they are:
    no sign, no scale, no mapping network. With ``activation="none"`` this makes the model the
    plain float network of the same shape (the float reference)."""
    original = _BinaryWeights.binary_kernel
    if enabled:
        _BinaryWeights.binary_kernel = lambda self, kernel: kernel  # type: ignore[method-assign]
    try:
        yield
    finally:
        _BinaryWeights.binary_kernel = original  # type: ignore[method-assign]


@contextlib.contextmanager
def reference_mapping(enabled: bool = True) -> Iterator[None]:
    """While active (init, tracing), every LNS layer builds :class:`ReferenceMappingNet` (the
    mapping network before issue 11) instead of :class:`bnnns.MappingNet`."""
    original = layers_lib.MappingNet
    if enabled:
        layers_lib.MappingNet = ReferenceMappingNet  # type: ignore[misc]
    try:
        yield
    finally:
        layers_lib.MappingNet = original  # type: ignore[misc]


def mapping_net(binarizer: str, residual: bool = False) -> nn.Module:
    """The mapping network an LNS binarizer's layers build (for the isolated timing)."""
    if binarizer == "lns_ref":
        return ReferenceMappingNet(residual=residual)
    dtype = "bfloat16" if binarizer == "lns_bf16" else "float32"
    return MappingNet(residual=residual, dtype=dtype)


def analytic_mapping_flops(kernel_shapes: Sequence[tuple[int, ...]]) -> dict[str, float]:
    """FLOPs of the mapping networks of layers with these kernel shapes, by counting.

    A layer with ``c`` input channels and ``c_out`` filters of ``k_h x k_w`` (a dense kernel:
    1x1) runs three 3x3 convs of ``8 c^2`` weights per tap (``c*2c + 2c*2c + 2c*c``) over
    ``c_out`` images. The plain ``SAME`` conv multiplies ``9 k_h k_w`` (position, tap) pairs
    per image (``1296 c_out c^2`` FLOPs forward for 3x3 filters), the valid-taps conv only
    ``(3 k_h - 2)(3 k_w - 2)`` (49 of 81: ``784 c_out c^2``). A train step adds the two
    backward products (wrt the activations and wrt the weights), ~2x the forward: ``step``
    = 3 x forward. FilterBankNorm, ReLU and the loss are not counted (O(c) per pixel).
    """
    plain = valid = 0.0
    for shape in kernel_shapes:
        kh, kw, c, c_out = shape if len(shape) == 4 else (1, 1, *shape)
        per_pair = 2.0 * 8 * c * c * c_out  # FLOPs of one (position, tap) pair, all 3 convs
        plain += per_pair * 9 * kh * kw
        valid += per_pair * (3 * kh - 2) * (3 * kw - 2)
    return {
        "analytic_fwd_flops_plain": plain,
        "analytic_fwd_flops_valid": valid,
        "analytic_step_flops_plain": 3 * plain,
        "analytic_step_flops_valid": 3 * valid,
    }


def _leaves_size(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def _memory(compiled: Any, prefix: str) -> dict[str, float]:
    """XLA's buffer sizes of a compiled executable (MiB): arguments, outputs, temporaries,
    aliased (donated) bytes, and their total ``peak`` = argument + output + temp - alias."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if m is None:
        return {}
    arg, out, temp, alias = (
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.temp_size_in_bytes,
        m.alias_size_in_bytes,
    )
    peak = arg + out + temp - alias
    return {
        f"{prefix}argument_mib": arg / MIB,
        f"{prefix}output_mib": out / MIB,
        f"{prefix}temp_mib": temp / MIB,
        f"{prefix}alias_mib": alias / MIB,
        f"{prefix}peak_mib": peak / MIB,
    }


def _flops(compiled: Any) -> float:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # not every backend implements it
        return float("nan")


def prepare(case: Case) -> tuple[Callable[[], float], dict[str, Any], list[Any]]:
    """Compile the jitted, donating train step of ``case`` on a fixed random batch.

    Returns ``(step, info, state_ref)``: ``step()`` runs one step and returns the loss as a host
    float (this syncs); ``state_ref[0]`` is the current :class:`TrainState`.
    """
    model, shape, classes = build(case)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((case.batch, *shape), dtype=np.float32)),
        "label": jnp.asarray(rng.integers(0, classes, size=(case.batch,)), jnp.int32),
        "mask": jnp.ones((case.batch,), jnp.float32),
    }
    alpha = LNS_ALPHA if case.binarizer in LNS_BINARIZERS else 0.0
    patches = contextlib.ExitStack()
    patches.enter_context(real_weights(case.binarizer == "float"))
    patches.enter_context(reference_mapping(case.binarizer == "lns_ref"))
    with patches:
        init = jax.jit(functools.partial(fresh_state, model, tx))
        init_args = (jax.random.key(0), batch["image"][:1])
        # Runs once: compile it fast (XLA -O0 takes ~2 s instead of ~10 s for resnet20).
        state = init.lower(*init_args).compile(INIT_COMPILER_OPTIONS)(*init_args)
        step_fn = jax.jit(
            functools.partial(train_step, model=model, tx=tx, alpha=alpha), donate_argnums=(0,)
        )
        t0 = time.perf_counter()
        compiled = step_fn.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
    params = traverse_util.flatten_dict(state.params)
    info: dict[str, Any] = {
        "n_params": _leaves_size(state.params),
        "n_mapping_params": int(sum(v.size for k, v in params.items() if "mapping" in k)),
        "compile_s": compile_s,
        "xla_flops": _flops(compiled),
        **_memory(compiled, "xla_"),
    }
    state_ref = [state]

    def step() -> float:
        state_ref[0], metrics = compiled(state_ref[0], batch)
        return float(metrics["loss"])

    t0 = time.perf_counter()
    info["loss_first"] = step()
    info["first_step_s"] = time.perf_counter() - t0
    return step, info, state_ref


def time_interleaved(
    steps: Sequence[Callable[[], float]], warmup: int, n: int
) -> list[list[float]]:
    """Run ``warmup + n`` rounds; in each, every step once (order reversed every other round, so
    a pair A/B sees the machine's drift equally). Returns the ``n`` timed seconds per step."""
    times: list[list[float]] = [[] for _ in steps]
    for i in range(warmup + n):
        order = range(len(steps)) if i % 2 == 0 else reversed(range(len(steps)))
        for j in order:
            t0 = time.perf_counter()
            steps[j]()
            if i >= warmup:
                times[j].append(time.perf_counter() - t0)
    return times


def mapping_step(case: Case, params: Any) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
    """A jitted function computing, for every LNS layer of the model, the mapping network's
    forward ``q^ = f_theta(W)``, the auxiliary loss and the STE, and their backward to theta
    and W, with a fixed random cotangent standing in for the conv's weight gradient.
    ``None`` for a model without mapping networks."""
    flat = traverse_util.flatten_dict(jax.tree.map(jnp.copy, params))  # the step donates params
    prefixes = sorted({k[: k.index("mapping")] for k in flat if "mapping" in k})
    if not prefixes:
        return None
    opts = binary_options(case.model, case.binarizer)
    net = mapping_net(case.binarizer, opts.residual_mapping)
    names = ["/".join(p) for p in prefixes]
    kernels = {n: flat[p + ("kernel",)] for n, p in zip(names, prefixes, strict=True)}
    theta = {
        n: traverse_util.unflatten_dict(
            {k[len(p) + 1 :]: v for k, v in flat.items() if k[: len(p) + 1] == (*p, "mapping")}
        )
        for n, p in zip(names, prefixes, strict=True)
    }
    return mapping_grad_fn(net, opts), (theta, kernels, _cotangents(kernels))


def _cotangents(kernels: dict[str, Any]) -> dict[str, jax.Array]:
    rng = np.random.default_rng(1)
    return {
        n: jnp.asarray(1e-3 * rng.standard_normal(k.shape, dtype=np.float32))
        for n, k in kernels.items()
    }


def mapping_grad_fn(net: nn.Module, opts: BinaryOptions) -> Callable[..., Any]:
    """``jit(grad)`` wrt ``(theta, kernels)`` of what an LNS step computes for its mapping
    networks: ``q^ = net(W)``, the auxiliary loss and ``ste_sign(q^)`` contracted with a fixed
    cotangent (standing in for the conv's weight gradient); ``theta``, ``kernels`` and
    ``cotangents`` are dicts by layer name."""
    clip = None if opts.weight_ste == "identity" else opts.weight_clip

    def loss(theta: Any, kernels: Any, cotangents: Any) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        for n, w in kernels.items():
            q_hat = net.apply({"params": theta[n]}, w)
            q_tilde = sign(jax.lax.stop_gradient(w))
            total += lns_loss(q_hat, q_tilde, opts.rho_pos, opts.rho_neg, opts.aux_reduction)
            total += jnp.sum(ste_sign(q_hat, clip) * cotangents[n])
        return total

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _run_synced(compiled: Any, args: tuple[Any, ...]) -> float:
    out = compiled(*args)
    jax.block_until_ready(out)
    return 0.0


def _median_stats(times: list[float], batch: int) -> dict[str, Any]:
    med = statistics.median(times)
    return {
        "n_timed": len(times),
        "step_s_median": med,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "img_per_s": batch / med,
    }


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``getrusage``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_cases(cases: Sequence[Case], warmup: int, steps: int) -> list[dict[str, Any]]:
    """Time ``cases`` in this process (interleaved if several); one result dict per case, plus a
    ``pair`` dict (per-round ratios of the second to the first case) when there are two."""
    prepared = [prepare(c) for c in cases]
    times = time_interleaved([p[0] for p in prepared], warmup, steps)
    results = []
    for case, (step, info, state_ref), t in zip(cases, prepared, times, strict=True):
        res: dict[str, Any] = {"kind": "step", **dataclasses.asdict(case), "warmup": warmup}
        res.update(info, **_median_stats(t, case.batch), loss_last=step())
        res["xla_gflop_per_s"] = info["xla_flops"] / res["step_s_median"] / 1e9
        mapping = mapping_step(case, state_ref[0].params)
        if mapping is not None:
            fn, args = mapping
            t0 = time.perf_counter()
            compiled = fn.lower(*args).compile()
            res["mapping_compile_s"] = time.perf_counter() - t0
            sync = functools.partial(_run_synced, compiled, args)
            (mt,) = time_interleaved([sync], 1, max(3, steps // 4))
            res["mapping_s_median"] = statistics.median(mt)
            res["mapping_share"] = res["mapping_s_median"] / res["step_s_median"]
            res["mapping_xla_flops"] = _flops(compiled)
            res["mapping_flops_share"] = res["mapping_xla_flops"] / res["xla_flops"]
            res.update(_memory(compiled, "mapping_xla_"))
            res.update(analytic_mapping_flops([k.shape for k in args[1].values()]))
            res["n_mapping_layers"] = len(args[1])
        res["paired"] = len(cases) > 1
        res["peak_rss_mib"] = peak_rss_mib()
        res["device_peak_mib"] = device_peak_mib()
        res["device"] = jax.devices()[0].device_kind
        res["jax"] = jax.__version__
        results.append(res)
    for j in range(1, len(cases)):  # each case against the first, round by round
        ratios = [b / a for a, b in zip(times[0], times[j], strict=True)]
        results.append(
            {
                "kind": "pair",
                "first": cases[0].name,
                "second": cases[j].name,
                "batch": cases[0].batch,
                "pairs": steps,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratio_of_medians": statistics.median(times[j]) / statistics.median(times[0]),
            }
        )
    return results


def device_peak_mib() -> float | None:
    """The accelerator's peak bytes in use by this process so far (``memory_stats``), MiB;
    ``None`` where the backend keeps no such count (CPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # not every backend implements it
        return None
    return stats["peak_bytes_in_use"] / MIB if stats and "peak_bytes_in_use" in stats else None


# --------------------------------------------------------------------------- driver (parent)
def _parse_lines(text: str) -> list[dict[str, Any]]:
    """JSON objects printed by a child: bare ``{...}`` lines or peers' ``RESULT {...}`` /
    ``AB {...}`` lines."""
    out = []
    for line in text.splitlines():
        body = line.split(" ", 1)[1] if line.startswith(("RESULT ", "AB ")) else line
        if body.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(body))
    return out


def _run(cmd: list[str], timeout: float) -> tuple[int, list[dict[str, Any]], str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        return 124, [], f"timeout after {timeout}s: {e}", time.perf_counter() - t0
    return p.returncode, _parse_lines(p.stdout), p.stderr[-2000:], time.perf_counter() - t0


def _emit(obj: dict[str, Any], out: str | None) -> None:
    line = json.dumps(obj)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def _child_cmd(cases: Sequence[Case], warmup: int, steps: int) -> list[str]:
    c = cases[0]
    return [
        *(sys.executable, "-m", "bnnns.bench", "--one", ",".join(x.name for x in cases)),
        *("--batch", str(c.batch), "--image", str(c.image), "--width", str(c.width)),
        *("--warmup", str(warmup), "--steps", str(steps)),
    ]


def run_models(args: argparse.Namespace) -> int:
    """Each (model, binarizer) in a fresh process; then one ``summary`` line per model."""
    failed = 0
    for model in args.models.split(","):
        batch, image, width = _defaults(model, "quick" if args.quick else "full")
        batch, image, width = args.batch or batch, args.image or image, args.width or width
        by_bin: dict[str, dict[str, Any]] = {}
        for binarizer in args.binarizers.split(","):
            case = Case(model, binarizer, batch, image, width)
            rc, lines, err, wall = _run(_child_cmd([case], args.warmup, args.steps), 3600)
            for obj in lines:
                _emit(obj, args.out)
                if obj.get("kind") == "step":
                    by_bin[binarizer] = obj
            if rc != 0 or binarizer not in by_bin:
                failed += 1
                _emit({"kind": "error", "case": case.name, "rc": rc, "stderr": err}, args.out)
        _emit(_summary(model, by_bin), args.out)
    return 1 if failed else 0


def _summary(model: str, r: dict[str, dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {"kind": "summary", "model": model}
    for b, res in r.items():
        s[f"{b}_step_s"] = res["step_s_median"]
        s[f"{b}_peak_rss_mib"] = res["peak_rss_mib"]
        s[f"{b}_xla_peak_mib"] = res.get("xla_peak_mib")
    if "sign" in r and "float" in r:
        s["sign_over_float"] = r["sign"]["step_s_median"] / r["float"]["step_s_median"]
    if "sign" in r and "lns" in r:
        sign_s, lns_s = r["sign"]["step_s_median"], r["lns"]["step_s_median"]
        s["lns_over_sign"] = lns_s / sign_s
        s["lns_minus_sign_s"] = lns_s - sign_s
        s["mapping_share_diff"] = (lns_s - sign_s) / lns_s
    if "lns" in r and "mapping_share" in r["lns"]:
        s["mapping_share_isolated"] = r["lns"]["mapping_share"]
    return s


# --------------------------------------------------------------------------- peers
def peer_configs(warmup: int, steps: int) -> list[tuple[str, str, list[str]]]:
    """``(name, interpreter path, argv)`` of every side-by-side config; argv[0] is a script."""
    py, venv = sys.executable, lambda v: os.path.join(PEERBENCH, f"venv_{v}", "bin", "python")
    n = ["--warmup", str(warmup), "--steps", str(steps)]
    pairs = ["--warmup", "3", "--pairs", str(max(5, steps // 2))]
    peer = lambda s: os.path.join(PEERS_DIR, s)
    one = lambda cases, *extra: ["-m", "bnnns.bench", "--one", cases, "--batch", "128", *extra]
    return [
        ("bnnns_sign", py, one("resnet20_peer:sign", *n)),
        ("bnnns_lns", py, one("resnet20_peer:lns", *n)),
        (
            "bnnns_pair",
            py,
            one(
                "resnet20_peer:sign,resnet20_peer:lns",
                "--warmup",
                "3",
                "--steps",
                str(max(5, steps // 2)),
            ),
        ),  # fmt: skip
        ("jax_plain", py, [peer("bench_jax.py"), "--variant", "plain", *n]),
        ("jax_mapnet", py, [peer("bench_jax.py"), "--variant", "mapnet", *n]),
        ("jax_pair", py, [peer("bench_jax_mapnet_ab.py"), "--batches", "128", *pairs]),
        ("larq_tf", venv("tf"), [peer("bench_larq.py"), "--mode", "tf", *n]),
        ("torch_eager", venv("torch"), [peer("bench_torch.py"), "--mode", "eager", *n]),
        ("torch_compile", venv("torch"), [peer("bench_torch.py"), "--mode", "compile", *n]),
    ]


def _peer_figure(name: str, lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step time (or, for ``*_pair``, the paired LNS/sign ratio) a config reports."""
    for obj in lines:
        if (
            name.endswith("_pair")
            and obj.get("kind", "pair") == "pair"
            and ("ratio_median" in obj or "pair_ratio_median" in obj)
        ):
            return {"pair_ratio_median": obj.get("ratio_median", obj.get("pair_ratio_median"))}
        if not name.endswith("_pair") and "step_s_median" in obj:
            keys = ("step_s_median", "step_s_min", "img_per_s", "peak_rss_mib", "compile_s")
            return {k: obj[k] for k in keys if k in obj}
    return None


def run_peers(args: argparse.Namespace) -> int:
    """``rounds`` rounds; in each, every config once as a fresh process, order rotated by one
    config per round. Then per config the median over rounds and bnnns' ratios, and targets."""
    configs = peer_configs(args.warmup, args.steps)
    if args.peer_configs:
        keep = set(args.peer_configs.split(","))
        configs = [c for c in configs if c[0] in keep]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in configs}
    failed = 0
    for r in range(args.rounds):
        k = r % len(configs)
        for name, python, argv in configs[k:] + configs[:k]:
            rec: dict[str, Any] = {"kind": "peer_run", "round": r, "config": name}
            script = argv[0] if argv[0].endswith(".py") else None
            if not os.path.exists(python) or (script and not os.path.exists(script)):
                rec.update(status="skipped", reason=f"missing {python if script else ''} {script}")
                _emit(rec, args.out)
                continue
            rc, lines, err, wall = _run([python, *argv], args.timeout)
            fig = _peer_figure(name, lines)
            rec.update(wall_s=wall, rc=rc)
            if rc != 0 or fig is None:
                failed += 1
                rec.update(status="failed", stderr=err)
            else:
                rec.update(status="ok", **fig)
                runs[name].append(rec)
            _emit(rec, args.out)
    for s in _peer_summary(runs):
        _emit(s, args.out)
    return 1 if failed else 0


def _per_round(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> list[float]:
    """Ratios ``a / b`` of the step medians of the rounds in which both ran."""
    sa = {x["round"]: x["step_s_median"] for x in runs.get(a, [])}
    sb = {x["round"]: x["step_s_median"] for x in runs.get(b, [])}
    return [sa[r] / sb[r] for r in sorted(sa) if r in sb]


def _peer_summary(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for name, recs in runs.items():
        s: dict[str, Any] = {"kind": "peer_summary", "config": name, "rounds": len(recs)}
        if not recs:
            s["status"] = "skipped"
        elif name.endswith("_pair"):
            s["pair_ratio_median"] = statistics.median(x["pair_ratio_median"] for x in recs)
        else:
            s["step_s_median"] = statistics.median(x["step_s_median"] for x in recs)
            s["img_per_s"] = 128 / s["step_s_median"]
            for mine in ("bnnns_sign", "bnnns_lns"):
                ratios = _per_round(runs, mine, name)
                if ratios and name != mine:
                    s[f"{mine}_over_this"] = statistics.median(ratios)
        out.append(s)
    pairs = {r["config"]: r.get("pair_ratio_median") for r in out}
    targets = [
        ("bnnns_sign_over_jax_plain", _per_round(runs, "bnnns_sign", "jax_plain"), 1.05),
        ("bnnns_lns_over_bnnns_sign", _per_round(runs, "bnnns_lns", "bnnns_sign"), 1.25),
        ("jax_mapnet_over_jax_plain", _per_round(runs, "jax_mapnet", "jax_plain"), None),
    ]
    for name, ratios, target in targets:
        value = statistics.median(ratios) if ratios else None
        t: dict[str, Any] = {"kind": "target", "name": name, "value": value, "target": target}
        met = None if value is None or target is None else value <= target
        t.update(rounds=len(ratios), met=met)
        out.append(t)
    paired = (
        ("bnnns_pair", "bnnns_pair_lns_over_sign", 1.25),
        ("jax_pair", "jax_pair_mapnet_over_plain", None),
    )
    for config, name, target in paired:
        value = pairs.get(config)
        met = None if value is None or target is None else value <= target
        out.append({"kind": "target", "name": name, "value": value, "target": target, "met": met})
    return out


# --------------------------------------------------------------------------- mapping A/B
AB_VARIANTS = ("reference", "conv", "valid_taps", "auto")


def _ab_net(variant: str, residual: bool) -> nn.Module:
    if variant == "reference":  # the mapping network before issue 11
        return ReferenceMappingNet(residual=residual)
    return MappingNet(residual=residual, conv_impl=variant)


def lns_kernels(case: Case, seed: int = 0) -> dict[str, jax.Array]:
    """Random latent kernels ``W`` of the LNS layers of ``case``'s model, by layer name (the
    shapes from ``jax.eval_shape`` of its init: nothing of the model is computed)."""
    model, shape, _ = build(dataclasses.replace(case, binarizer="lns"))
    tx = optax.sgd(LR)
    abstract = jax.eval_shape(
        functools.partial(fresh_state, model, tx), jax.random.key(0), jnp.zeros((1, *shape))
    )
    flat = traverse_util.flatten_dict(abstract.params)
    prefixes = sorted({k[: k.index("mapping")] for k in flat if "mapping" in k})
    rng = np.random.default_rng(seed)
    kernels = {}
    for p in prefixes:
        s = flat[p + ("kernel",)].shape
        fan_in = int(np.prod(s[:-1]))
        kernels["/".join(p)] = jnp.asarray(rng.standard_normal(s, np.float32) / fan_in**0.5)
    return kernels


def _random_theta(net: nn.Module, kernel: jax.Array, rng: np.random.Generator) -> Any:
    """Parameters of ``net`` for ``kernel`` without running it: lecun-normal conv kernels,
    unit norm scales, small random biases (values do not change the cost)."""
    abstract = jax.eval_shape(net.init, jax.random.key(0), kernel)["params"]

    def fill(path: tuple[Any, ...], x: Any) -> jax.Array:
        name = path[-1].key
        if name == "kernel":
            std = 1.0 / float(np.prod(x.shape[:-1])) ** 0.5
            return jnp.asarray(std * rng.standard_normal(x.shape, np.float32))
        if name == "scale":
            return jnp.ones(x.shape, x.dtype)
        return jnp.asarray(0.1 * rng.standard_normal(x.shape, np.float32))

    return jax.tree_util.tree_map_with_path(fill, abstract)


def run_mapping_ab(args: argparse.Namespace) -> int:
    """Per model: the mapping networks' forward + backward (the isolated function of
    :func:`mapping_grad_fn`, every LNS layer) with the reference (pre issue 11) network, the
    plain conv without pre-norm biases and the valid-taps conv (the default), compiled in this
    process and timed in interleaved rounds; then their ratios and the 1.5x target."""
    from bnnns.core.mapping import drop_prenorm_biases

    for model in args.models.split(","):
        batch, image, width = _defaults(model, "quick" if args.quick else "full")
        case = Case(model, "lns", batch, args.image or image, args.width or width)
        opts = binary_options(model, "lns")
        kernels = lns_kernels(case)
        rng = np.random.default_rng(2)
        ref = ReferenceMappingNet(residual=opts.residual_mapping)
        theta_ref = {n: _random_theta(ref, k, rng) for n, k in kernels.items()}
        theta_new = drop_prenorm_biases({n: {"mapping": t} for n, t in theta_ref.items()})
        theta_new = {n: t["mapping"] for n, t in theta_new.items()}
        cot = _cotangents(kernels)
        load_before = os.getloadavg()
        runs, grads = {}, {}
        for v in AB_VARIANTS:
            fn = mapping_grad_fn(_ab_net(v, opts.residual_mapping), opts)
            a = (theta_ref if v == "reference" else theta_new, kernels, cot)
            t0 = time.perf_counter()
            compiled = fn.lower(*a).compile()
            compile_s = time.perf_counter() - t0
            grads[v] = jax.block_until_ready(compiled(*a))[1]  # d/dW: the same in every variant
            runs[v] = (compiled, a, compile_s)
        steps = [functools.partial(_run_synced, c, a) for c, a, _ in runs.values()]
        times = dict(zip(runs, time_interleaved(steps, args.warmup, args.steps), strict=True))
        load_after = os.getloadavg()
        shapes = [k.shape for k in kernels.values()]
        for v, (compiled, _, compile_s) in runs.items():
            line = {"kind": "mapping_ab", "model": model, "variant": v, "width": case.width}
            line.update(_median_stats(times[v], 1), compile_s=compile_s, n_layers=len(shapes))
            line.pop("img_per_s")
            line["xla_flops"] = _flops(compiled)
            line.update(_memory(compiled, "xla_"))
            # dL/dW against the reference, worst layer: relative L2 and max |diff| / max |g|.
            # Both are float32 rounding (~1e-6) except where a ReLU input within rounding of 0
            # changes side: then one filter's gradient differs by that unit's contribution.
            diff = [(grads[v][n] - g, g) for n, g in grads["reference"].items()]
            line["rel_l2_dW_vs_reference"] = max(
                float(jnp.linalg.norm(d) / (jnp.linalg.norm(g) + 1e-30)) for d, g in diff
            )
            line["max_rel_diff_dW_vs_reference"] = max(
                float(jnp.max(jnp.abs(d)) / (jnp.max(jnp.abs(g)) + 1e-30)) for d, g in diff
            )
            _emit(line, args.out)
        summary = {"kind": "mapping_ab_summary", "model": model, "rounds": args.steps}
        summary.update(analytic_mapping_flops(shapes))
        for v in AB_VARIANTS[1:]:
            ratios = [r / x for r, x in zip(times["reference"], times[v], strict=True)]
            summary[f"speedup_{v}_median"] = statistics.median(ratios)
            summary[f"speedup_{v}_min"] = min(ratios)
            summary[f"speedup_{v}_max"] = max(ratios)
        summary.update(loadavg_before=load_before, loadavg_after=load_after, cpus=os.cpu_count())
        _emit(summary, args.out)
        value = summary["speedup_auto_median"]  # the default
        target = {"kind": "target", "name": f"{model}_mapping_fwd_bwd_speedup", "value": value}
        _emit({**target, "target": 1.5, "met": value >= 1.5}, args.out)
    return 0


# --------------------------------------------------------------------------- costs per model
def run_costs(args: argparse.Namespace) -> int:
    """Per model, sign and LNS paired in one fresh process (``--one m:sign,m:lns``); then one
    ``cost`` line: the mapping networks' FLOPs per step (XLA cost analysis: of the isolated
    mapping function and the difference of the two steps), their share of the step's FLOPs and
    of its time, and the analytic figures beside them."""
    failed = 0
    for model in args.models.split(","):
        batch, image, width = _defaults(model, "quick" if args.quick else "full")
        batch, image, width = args.batch or batch, args.image or image, args.width or width
        cases = [Case(model, b, batch, image, width) for b in ("sign", "lns")]
        rc, lines, err, wall = _run(_child_cmd(cases, args.warmup, args.steps), args.timeout)
        for obj in lines:
            _emit(obj, args.out)
        steps = {x["binarizer"]: x for x in lines if x.get("kind") == "step"}
        pair = next((x for x in lines if x.get("kind") == "pair"), None)
        if rc != 0 or set(steps) != {"sign", "lns"} or pair is None:
            failed += 1
            _emit({"kind": "error", "case": f"{model}:sign,lns", "rc": rc, "stderr": err}, args.out)
            continue
        _emit(_cost_line(model, steps["sign"], steps["lns"], pair), args.out)
    return 1 if failed else 0


def _cost_line(
    model: str, sign_res: dict[str, Any], lns: dict[str, Any], pair: dict[str, Any]
) -> dict[str, Any]:
    keys = [k for k in lns if k.startswith("analytic_")]
    c: dict[str, Any] = {"kind": "cost", "model": model, "batch": lns["batch"]}
    c.update(image=lns["image"], width=lns["width"], n_mapping_layers=lns["n_mapping_layers"])
    c.update(
        step_flops_sign=sign_res["xla_flops"],
        step_flops_lns=lns["xla_flops"],
        step_flops_lns_minus_sign=lns["xla_flops"] - sign_res["xla_flops"],
        mapping_flops=lns["mapping_xla_flops"],
        mapping_flops_share=lns["mapping_xla_flops"] / lns["xla_flops"],
        step_s_sign=sign_res["step_s_median"],
        step_s_lns=lns["step_s_median"],
        mapping_s=lns["mapping_s_median"],
        mapping_time_share=lns["mapping_s_median"] / lns["step_s_median"],
        lns_over_sign_paired=pair["ratio_median"],
        mapping_time_share_diff=1.0 - 1.0 / pair["ratio_median"],
        **{k: lns[k] for k in keys},
    )
    c["mapping_flops_over_analytic_valid"] = c["mapping_flops"] / c["analytic_step_flops_valid"]
    return c


# --------------------------------------------------------------------------- accelerator step
GPU_BINARIZERS = ("sign", "lns", "lns_bf16")


def run_gpu_step(args: argparse.Namespace) -> int:
    """birealnet18 at ImageNet shapes on the default device: per batch size, sign, LNS and LNS
    with the bfloat16 mapping option compiled and timed interleaved in one fresh process; then a
    ``gpu_step`` line per batch (images/s, s/step, LNS/sign, memory). ``max`` in
    ``--gpu-batches``: double the largest listed batch until a run fails (out of memory)."""
    batches = [b for b in args.gpu_batches.split(",") if b != "max"]
    search = "max" in args.gpu_batches.split(",")
    image, width = args.image or 224, args.width or 64
    failed, largest = 0, None
    todo = [int(b) for b in batches]
    while todo:
        batch = todo.pop(0)
        cases = [Case("birealnet18", b, batch, image, width) for b in GPU_BINARIZERS]
        rc, lines, err, wall = _run(_child_cmd(cases, args.warmup, args.steps), args.timeout)
        for obj in lines:
            _emit(obj, args.out)
        steps = {x["binarizer"]: x for x in lines if x.get("kind") == "step"}
        pairs = {x["second"].split(":")[1]: x for x in lines if x.get("kind") == "pair"}
        ok = rc == 0 and set(steps) == set(GPU_BINARIZERS)
        if not ok:
            _emit({"kind": "error", "case": f"birealnet18@{batch}", "rc": rc, "stderr": err},
                  args.out)  # fmt: skip
            if not (search and not todo and largest is not None and batch > largest):
                failed += 1
            continue
        largest = batch if largest is None else max(largest, batch)
        line: dict[str, Any] = {"kind": "gpu_step", "batch": batch, "image": image}
        line.update(width=width, device=steps["sign"]["device"], wall_s=wall)
        for b, r in steps.items():
            line.update({f"{b}_step_s": r["step_s_median"], f"{b}_img_per_s": r["img_per_s"]})
            line.update({f"{b}_xla_peak_mib": r.get("xla_peak_mib")})
        line["device_peak_mib"] = steps["sign"].get("device_peak_mib")
        for b in ("lns", "lns_bf16"):
            line[f"{b}_over_sign"] = pairs[b]["ratio_median"] if b in pairs else None
        _emit(line, args.out)
        if search and not todo and batch * 2 <= args.gpu_max_batch:
            todo.append(batch * 2)
    if search:
        _emit({"kind": "gpu_step_max", "largest_batch_that_ran": largest}, args.out)
    return 1 if failed else 0


# --------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bnnns.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized: 2 warm-up + 5 timed steps")
    p.add_argument("--models", default=None, help=f"any of {MODELS} or the zoo's models")
    p.add_argument("--binarizers", default="float,sign,lns", help=f"subset of {BINARIZERS}")
    p.add_argument("--batch", type=int, default=0, help="override the models' batch size")
    p.add_argument("--image", type=int, default=0, help="override the image size (H = W)")
    p.add_argument("--width", type=int, default=0, help="override the base channel width")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the first")
    p.add_argument("--steps", type=int, default=None, help="timed steps (pairs with --one a,b)")
    p.add_argument("--one", default=None, help="run MODEL:BIN[,MODEL:BIN] in this process")
    p.add_argument("--peers", action="store_true", help="bnnns vs peer frameworks, interleaved")
    p.add_argument("--rounds", type=int, default=3, help="--peers: rounds")
    p.add_argument("--peer-configs", default="", help="--peers: subset of the config names")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per child process")
    p.add_argument("--mapping-ab", action="store_true", help="mapping nets: new vs reference")
    p.add_argument("--costs", action="store_true", help="mapping FLOPs and time share per model")
    p.add_argument("--gpu-step", action="store_true", help="birealnet18 ImageNet step, b64/256")
    p.add_argument("--gpu-batches", default="64,256", help="--gpu-step: batches (max: search)")
    p.add_argument("--gpu-max-batch", type=int, default=4096, help="--gpu-step: search limit")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--deploy", action="store_true", help="artifact size and predict speed")
    a = p.parse_args(argv)
    if a.models is None:
        a.models = "birealnet18" if a.mapping_ab else "resnet20,birealnet18"
    if a.warmup is None:
        a.warmup = 1 if a.mapping_ab else (2 if a.quick else (5 if a.peers else 3))
    if a.steps is None:
        if a.mapping_ab:
            a.steps = 2 if a.quick else 5
        elif a.costs:
            a.steps = 5 if a.quick else 10
        else:
            a.steps = 5 if a.quick else (50 if a.peers else 20)
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.deploy:  # bnnns/bench/deploy.py
        from bnnns.bench.deploy import run_deploy

        return run_deploy(args.quick, lambda obj: _emit(obj, args.out))
    if args.one:
        names = [n.split(":") for n in args.one.split(",")]
        model = names[0][0]
        batch, image, width = _defaults(model, "full")
        cases = [
            Case(m, b, args.batch or batch, args.image or image, args.width or width)
            for m, b in names
        ]
        for res in run_cases(cases, args.warmup, args.steps):
            _emit(res, args.out)
        return 0
    if args.peers:
        return run_peers(args)
    if args.mapping_ab:
        return run_mapping_ab(args)
    if args.costs:
        return run_costs(args)
    if args.gpu_step:
        return run_gpu_step(args)
    return run_models(args)


if __name__ == "__main__":
    sys.exit(main())
