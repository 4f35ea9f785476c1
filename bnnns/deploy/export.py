"""Export a trained model as a deployable ``.bnn`` artifact (method.md §1.7).

    python -m bnnns.deploy.export RUN_DIR --out model.bnn [--stage lns]

After training only ``Q^ = sign(f_theta(W))`` (LNS) or ``sign(W)`` (sign) is kept: the artifact
holds, per binary layer, its sign bits packed 8 per byte along the input dimension
(:mod:`bnnns.core.packing`) and its D8 scale ``mean|W|``; the real layers (stem, head, BatchNorm,
PReLU, shortcuts) in float32; the model's name, options, input shape and input normalisation.
No latent weights and nothing under ``mapping`` (the mapping networks are training-only), so
an LNS artifact holds the same arrays, of the same size, as the sign artifact of the same
model (only the header's ``source`` differs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from ml_collections import ConfigDict

from bnnns.core.packing import pack_signs
from bnnns.core.scaling import weight_scale
from bnnns.deploy import artifact as artifact_lib

__all__ = ["deployable_variables", "make_artifact", "export_state", "export_run", "main"]

SEP = "/"
# Training only: D1 "pretrained" labels, EDE's training progress (bnnns.nn.layers.PROGRESS).
DROPPED_COLLECTIONS = ("lns_labels", "progress")


def _path(keys) -> str:
    return SEP.join(str(getattr(k, "key", k)) for k in keys)


def deployable_variables(
    model: nn.Module,
    variables: dict,
    dummy_input: jax.Array,
    scale_mode: str,
    sown: dict | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """What inference needs, flat by ``"a/b/c"`` paths, as numpy.

    Returns ``{"params": real params, "batch_stats": ..., "binary": {"<layer>/bits": int8 ±1
    (the kernel shape), "<layer>/scale": float32 (D8)}}``: the binary weights the model computes
    with (sown by every binary layer, :mod:`bnnns.nn.layers`), never the latent kernels nor any
    parameter under a ``mapping`` scope. ``sown``: the ``binary_weights`` collection of an
    eval-mode apply already run (else one is run on ``dummy_input``).
    """
    if sown is None:
        apply = lambda v, x: model.apply(v, x, train=False, mutable=["binary_weights"])[1]  # noqa: E731
        sown = jax.jit(apply)(variables, dummy_input)["binary_weights"]
    bits = {}
    for keys, leaf in jax.tree_util.tree_flatten_with_path(sown)[0]:
        bits[_path(keys[:-2])] = np.asarray(leaf, np.int8)  # drop (BINARY_WEIGHTS_KEY, tuple index)
    flat_params = traverse_util.flatten_dict(variables["params"])
    params = {SEP.join(k): np.asarray(v) for k, v in flat_params.items()}
    out: dict[str, dict[str, np.ndarray]] = {"params": {}, "binary": {}}
    for layer, q in bits.items():
        kernel = params[f"{layer}{SEP}kernel"]
        out["binary"][f"{layer}{SEP}bits"] = q
        out["binary"][f"{layer}{SEP}scale"] = np.asarray(
            weight_scale(jnp.asarray(kernel), scale_mode), np.float32
        )
    for name, value in params.items():
        parts = name.split(SEP)
        if "mapping" in parts or (SEP.join(parts[:-1]) in bits and parts[-1] == "kernel"):
            continue
        out["params"][name] = np.asarray(value, np.float32)
    for collection, tree in variables.items():
        if collection in ("params", *DROPPED_COLLECTIONS):
            continue
        flat = traverse_util.flatten_dict(tree)
        out[collection] = {SEP.join(k): np.asarray(v, np.float32) for k, v in flat.items()}
    return out


def _packed_axis(shape: tuple[int, ...]) -> int:
    """The input dimension: ``c_in`` of ``(kh, kw, c_in, c_out)`` or ``(c_in, c_out)``."""
    return len(shape) - 2


def make_artifact(deployable: dict, header: dict[str, Any]) -> artifact_lib.Artifact:
    """Pack the binary weights and assemble the artifact (``header`` describes the model)."""
    arrays: dict[str, np.ndarray] = {}
    layers = {}
    for name, value in deployable["binary"].items():
        layer, leaf = name.rsplit(SEP, 1)
        if leaf == "bits":
            axis = _packed_axis(value.shape)
            arrays[f"binary{SEP}{layer}{SEP}bits"] = pack_signs(value, axis=axis, word_bits=8)
            layers[layer] = {"shape": list(value.shape), "packed_axis": axis}
        else:
            arrays[f"binary{SEP}{name}"] = value.astype(np.float32)
    for collection, flat in deployable.items():
        if collection != "binary":
            arrays.update({f"{collection}{SEP}{k}": v.astype(np.float32) for k, v in flat.items()})
    return artifact_lib.Artifact(dict(header, binary_layers=layers), arrays)


def model_header(config: ConfigDict, info: Any) -> dict[str, Any]:
    """The model description inference rebuilds the network from."""
    kwargs = {k: v for k, v in config.model.to_dict().items() if k not in ("name", "dtype")}
    return {
        "format": "bnnns-artifact",
        "model": {
            "name": config.model.name,
            "kwargs": json.loads(json.dumps(kwargs, default=list)),
            "dtype": str(config.model.get("dtype", "float32")),
            "num_classes": int(info.num_classes),
        },
        "binary": {
            "weight_scale": config.binary.weight_scale,
            "activation": config.binary.activation,
            "act_clip": float(config.binary.act_clip),
        },
        "input_shape": [int(d) for d in info.image_shape],
        "normalization": {"mean": list(map(float, info.mean)), "std": list(map(float, info.std))},
        "dataset": config.dataset,
    }


def export_state(
    config: ConfigDict, state: Any, info: Any, stage: str, source: dict | None = None
) -> artifact_lib.Artifact:
    """The artifact of a train state of ``stage`` (``"pretrain"``, ``"finetune"``, ``"lns"``)."""
    from bnnns.train.train_lib import build_model

    model = build_model(config, info.num_classes, stage)
    variables = {"params": state.params, **state.model_state}
    dummy = jnp.zeros((1, *info.image_shape), jnp.float32)
    deployable = deployable_variables(model, variables, dummy, config.binary.weight_scale)
    header = model_header(config, info)
    header["source"] = {"stage": stage, **(source or {})}
    return make_artifact(deployable, header)


def _stages_with_checkpoints(config: ConfigDict, workdir: str) -> list[str]:
    stages = [s.strip() for s in config.stages.split(",") if s.strip()]
    return [s for s in stages if os.path.isdir(os.path.join(workdir, "checkpoints", s))]


def export_run(workdir: str, out: str, stage: str | None = None) -> tuple[int, dict]:
    """Export ``stage`` (default: the last stage of the run with a checkpoint) of a run's
    workdir to ``out``; returns the file size and the header. Needs only the workdir
    (``config.json``, ``dataset.json``, the checkpoints), never the training data."""
    from bnnns.train.train_lib import restore_stage, run_info

    if not os.path.exists(workdir):
        raise FileNotFoundError(f"run directory {workdir!r} does not exist")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir!r} is a file, not a run directory (of train.py)")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{workdir!r} is not a run directory: no config.json")
    with open(config_path) as f:
        try:
            config = ConfigDict(json.load(f))
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: not a readable config ({e})") from None
    available = _stages_with_checkpoints(config, workdir)
    if stage is None:
        if not available:
            raise FileNotFoundError(f"{workdir!r} has no checkpoint of stages {config.stages!r}")
        stage = available[-1]
    elif stage not in available:
        raise FileNotFoundError(f"{workdir!r} has no checkpoint of stage {stage!r}: {available}")
    binary = config.get("binary", {})
    if stage != "lns" and (
        binary.get("weight_binarizer", "sign") == "real" or binary.get("activation") == "relu"
    ):
        raise ValueError(
            f"{workdir!r} trained a float model (binary.weight_binarizer="
            f"{binary.get('weight_binarizer')!r}, activation={binary.get('activation')!r}): "
            "only binary models export to .bnn"
        )
    info = run_info(config, workdir)  # from the run directory: the data set is not read
    state, meta = restore_stage(config, workdir, stage)
    history = meta.get("history", [])
    source = {"step": int(state.step), "done": bool(meta.get("done", False))}
    if history:
        source["test_accuracy"] = history[-1].get("test_accuracy")
    art = export_state(config, state, info, stage, source)
    size = artifact_lib.write(art, out)
    return size, art.header


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bnnns.deploy.export", description=__doc__.split("\n")[0]
    )
    p.add_argument("run_dir", help="a workdir of train.py (config.json + checkpoints/)")
    p.add_argument("--out", required=True, help="the .bnn file to write")
    p.add_argument("--stage", default=None, help="default: the run's last stage with a checkpoint")
    p.add_argument(
        "--seed", type=int, default=None, help="replica s of a config.num_seeds run (its seed_s/)"
    )
    args = p.parse_args(argv)
    run_dir = args.run_dir
    if args.seed is not None:
        from bnnns.train.seeds import seed_workdir

        run_dir = seed_workdir(run_dir, args.seed)
        if not os.path.isdir(run_dir):
            print(f"error: --seed {args.seed}: {run_dir} does not exist", file=sys.stderr)
            return 2
    if os.path.isdir(args.out):  # before the restore: say it at once
        print(
            f"error: --out {args.out} is a directory; give the .bnn file to write", file=sys.stderr
        )
        return 2
    try:
        size, header = export_run(run_dir, args.out, args.stage)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the artifact's folder cannot be made or written
        print(f"error: --out {args.out}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return 2
    n_bin = len(header["binary_layers"])
    print(
        f"wrote {args.out}: {size} bytes ({size * 8 / 1e6:.3f} Mbit), model "
        f"{header['model']['name']}, stage {header['source']['stage']}, {n_bin} binary layers"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
