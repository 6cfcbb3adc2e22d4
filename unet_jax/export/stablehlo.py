"""StableHLO export: the network's probabilities for (batch, T, T, C) float32 tiles as ``jax.export`` bytes (CPU
and CUDA, batch symbolic) and a JSON description beside them. Host-side.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import jax
import jax.numpy as jnp

from unet_jax.export.common import import_flatbuffers, in_channels, probability_fn
from unet_jax.io import atomic_write
from unet_jax.model import UNet

PLATFORMS = ("cpu", "cuda")       # the StableHLO artifact runs on either


def export_stablehlo(model: UNet, variables, tile_size: int, platforms=PLATFORMS) -> jax.export.Exported:
    """``jax.export`` of ``probability_fn`` for (batch, tile, tile, C) float32 input, batch symbolic."""
    batch, = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, tile_size, tile_size, in_channels(variables)), jnp.float32)
    return jax.export.export(jax.jit(probability_fn(model, variables)), platforms=platforms)(spec)


def write_stablehlo(model: UNet, variables, output: Path, info: dict) -> List[Path]:
    """Write the serialised StableHLO to ``output`` and its description to ``output`` + '.json'."""
    import_flatbuffers()
    exported = export_stablehlo(model, variables, info["tile_size"])
    t, o = info["tile_size"], info["output_size"]
    meta = dict(info, format="stablehlo", layout="NHWC", input_shape=["batch", t, t, info["channels"]],
                output_shape=["batch", o, o, info["classes"]], dtype="float32", platforms=list(exported.platforms),
                jax_version=jax.__version__, calling_convention_version=exported.calling_convention_version,
                usage="jax.export.deserialize(open(PATH, 'rb').read()).call(x)")
    data = bytes(exported.serialize())
    sidecar = atomic_write(Path(f"{output}.json"), lambda p: Path(p).write_text(json.dumps(meta, indent=1) + "\n"))
    try:
        return [atomic_write(output, lambda p: Path(p).write_bytes(data)), sidecar]
    except BaseException:
        sidecar.unlink(missing_ok=True)           # no description without its model
        raise
