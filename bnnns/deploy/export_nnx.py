"""Export an NNX model (:mod:`bnnns.nn.nnx_models`) to a ``.bnn`` artifact, as a linen run.

The artifact format is keyed to the linen models that :func:`bnnns.deploy.inference.predict`
rebuilds by name, so an NNX model is exported through its linen twin: its state becomes the
linen variables (:func:`bnnns.nnx.to_linen_variables`, the same names), and the twin's sown
binary weights give the packed bits exactly as for a trained linen run
(:func:`bnnns.deploy.export.deployable_variables`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from bnnns.deploy import artifact as artifact_lib
from bnnns.deploy.export import deployable_variables, make_artifact
from bnnns.nn.nnx_layers import to_linen_variables

__all__ = ["export_nnx"]


def export_nnx(
    model: nnx.Module, twin: nn.Module, dummy_input: jax.Array, header: dict[str, Any]
) -> artifact_lib.Artifact:
    """The artifact of NNX ``model``, whose linen twin is ``twin`` (the registered model of
    ``header["model"]``, e.g. ``create_model("mlp", ...)`` for :class:`bnnns.nnx.BinaryMLP`).

    ``header`` is what :func:`bnnns.deploy.export.model_header` writes for a run (the model's
    name, kwargs, ``num_classes``, the binary options, input shape and normalisation).

    Raises:
        ValueError: ``model``'s parameters are not ``twin``'s (naming the first difference).
    """
    variables = to_linen_variables(model)
    init = jax.eval_shape(lambda k: twin.init(k, dummy_input, train=False), jax.random.key(0))
    want = jax.tree_util.tree_structure(init["params"])
    got = jax.tree_util.tree_structure(variables["params"])
    if want != got:
        raise ValueError(
            f"export_nnx: the NNX model's parameters are not those of {type(twin).__name__}: "
            f"got {got}, want {want}"
        )
    scale_mode = header["binary"]["weight_scale"]
    return make_artifact(deployable_variables(twin, variables, dummy_input, scale_mode), header)
