"""Benchmark: seconds per train step and tiles/s of the U-Net (network step: forward, weighted loss, backward,
SGD-momentum update), with achieved FLOP/s from the network's FLOP count (3x the forward convolution FLOPs).

    python benchmarks/train_step.py --features 16 --tile 572 --batch 1 --impl fast --impl plain

Prints one JSON object: per implementation the median step time over --repeats, tiles/s, TFLOP/s, and the ratio of
each implementation's median to the first one's (the baseline).
"""
import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unet_jax.losses import weighted_softmax_cross_entropy
from unet_jax.model import UNet, output_size, unet_flops


def make_jax_step(features, depth, tile, batch, dtype="float32", impl="fast", padding="VALID"):
    """A jitted SGD step of the network on fixed random data; returns (step_fn, state)."""
    model = UNet(features=features, depth=depth, padding=padding, impl=impl,
                 dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch, tile, tile, 1)), jnp.float32)
    out = output_size(tile, depth, padding)
    y = jnp.asarray(rng.integers(0, 2, size=(batch, out, out)), jnp.int32)
    w = jnp.asarray(rng.uniform(0.5, 2, size=(batch, out, out)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
    tx = optax.sgd(1e-3, momentum=0.99)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
            return weighted_softmax_cross_entropy(logits, y, w)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, opt_state]

    def run(i):
        p, o, loss = step(state[0], state[1], jax.random.PRNGKey(i))
        state[0], state[1] = p, o
        return loss

    return run


def time_fn(fn, repeats, warmup=1):
    """Median seconds of ``fn(i)`` (blocked until ready) after ``warmup`` calls; also the compile+first call."""
    t = time.perf_counter()
    jax.block_until_ready(fn(0))
    first = time.perf_counter() - t
    for i in range(1, warmup):
        jax.block_until_ready(fn(i))
    ts = []
    for i in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(100 + i))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), first, ts


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "cpu": cpu, "devices": jax.device_count()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--tile", type=int, default=572)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--impl", action="append", choices=["fast", "plain"], help="repeatable; first is the baseline")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (e.g. 989 for H100 bf16)")
    a = p.parse_args(argv)
    impls = a.impl or ["fast"]
    flops = 3 * unet_flops(a.tile, a.features, a.depth) * a.batch
    res = {"benchmark": "train_step", "features": a.features, "depth": a.depth, "tile": a.tile, "batch": a.batch,
           "dtype": a.dtype, "flops_per_step": flops, "machine": machine(), "results": {}}
    base = None
    for impl in impls:
        med, first, ts = time_fn(make_jax_step(a.features, a.depth, a.tile, a.batch, a.dtype, impl), a.repeats)
        base = base or med
        r = {"median_s": med, "first_call_s": first, "times_s": ts, "tiles_per_s": a.batch / med,
             "tflops": flops / med / 1e12, "ratio_to_first": med / base}
        if a.peak_tflops:
            r["mfu"] = flops / med / 1e12 / a.peak_tflops
        res["results"][impl] = r
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
