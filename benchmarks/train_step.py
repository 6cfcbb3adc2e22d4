"""Benchmark: seconds per train step and tiles/s of the U-Net (network step: forward, weighted loss, backward,
SGD-momentum update), with achieved FLOP/s from the network's FLOP count (3x the forward convolution FLOPs).

    python benchmarks/train_step.py --features 16 --tile 572 --batch 1 --impl fast --impl plain:jaxdefault

Each ``--impl`` is ``IMPL[:XLA]``: IMPL is the network: 'fast' (``unet_jax.model.UNet``) or 'plain' (the reference
built from generic flax layers, ``unet_jax.plain_unet.PlainUNet``); XLA is 'pkg' (default: this process's XLA flags,
which include ``unet_jax.xla_cpu.XLA_CPU_FLAGS``, set by ``unet_jax.configure_cpu()`` at the start of ``main``,
unless ``UNET_JAX_XLA_CPU_FLAGS=0``) or 'jaxdefault' (jaxlib's default YNNPACK fusion set restored for that step
through ``compiler_options``: how unet-jax ran before it set its flag). The first ``--impl`` is the baseline.

All configurations are compiled first, then timed interleaved (one step of each per round, ``--repeats`` rounds)
so that load from other processes hits them alike. ``--threads N`` pins the process to N CPUs before JAX starts
(XLA sizes its thread pool from the affinity mask). Prints one JSON object: per configuration the median and
minimum step time, the median process CPU time per step, tiles/s, TFLOP/s and the ratio of its median to the
baseline's; the load average before and after.
"""
import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unet_jax import configure_cpu
from unet_jax.geometry import output_size, unet_flops
from unet_jax.losses import weighted_softmax_cross_entropy
from unet_jax.model import UNet
from unet_jax.xla_cpu import xla_cpu_flags_applied

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import random_variables, time_interleaved  # noqa: E402

# jaxlib's default --xla_cpu_experimental_ynn_fusion_type (checked for jaxlib 0.10.2 against an unflagged process).
JAX_DEFAULT_XLA = {"xla_cpu_experimental_ynn_fusion_type": ",".join(
    "LIBRARY_FUSION_TYPE_" + t for t in ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION", "REDUCE"))}
XLA_CHOICES = {"pkg": None, "jaxdefault": JAX_DEFAULT_XLA}


def set_threads(n):
    """Pin this process to its first ``n`` allowed CPUs (host-side; call before JAX or torch start threads)."""
    if n is None:
        return
    cpus = sorted(os.sched_getaffinity(0))
    if not 1 <= n <= len(cpus):
        raise ValueError(f"threads must be in [1, {len(cpus)}], got {n}")
    os.sched_setaffinity(0, set(cpus[:n]))


def parse_config(spec):
    """'IMPL[:XLA]' -> (impl, compiler_options)."""
    impl, _, xla = spec.partition(":")
    xla = xla or "pkg"
    if impl not in ("fast", "plain") or xla not in XLA_CHOICES:
        raise ValueError(f"--impl must be IMPL[:XLA] with IMPL in (fast, plain), XLA in {tuple(XLA_CHOICES)}; "
                         f"got {spec!r}")
    return impl, XLA_CHOICES[xla]


def network_class(impl):
    """'fast' -> ``unet_jax.model.UNet``; 'plain' -> the reference ``unet_jax.plain_unet.PlainUNet``."""
    if impl == "fast":
        return UNet
    if impl != "plain":
        raise ValueError(f"impl must be 'fast' or 'plain', got {impl!r}")
    from unet_jax.plain_unet import PlainUNet
    return PlainUNet


def make_jax_step(features, depth, tile, batch, dtype="float32", impl="fast", padding="VALID",
                  compiler_options=None):
    """A jitted SGD step of the network on fixed random data; returns ``run(i) -> loss`` (state kept inside)."""
    model = network_class(impl)(features=features, depth=depth, padding=padding,
                                dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch, tile, tile, 1)), jnp.float32)
    out = output_size(tile, depth, padding)
    y = jnp.asarray(rng.integers(0, 2, size=(batch, out, out)), jnp.int32)
    w = jnp.asarray(rng.uniform(0.5, 2, size=(batch, out, out)), jnp.float32)
    # He-normal parameters drawn with numpy: no eager initialisation pass, which runs op by op (20 s on a CPU).
    params = random_variables(model, (1, tile, tile, 1))["params"]
    tx = optax.sgd(1e-3, momentum=0.99)
    opt_state = tx.init(params)

    def step(params, opt_state, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
            return weighted_softmax_cross_entropy(logits, y, w)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, compiler_options=compiler_options)
    state = [params, opt_state]

    def run(i):
        p, o, loss = step(state[0], state[1], jax.random.PRNGKey(i))
        state[0], state[1] = p, o
        return loss

    run.lower = lambda: step.lower(state[0], state[1], jax.random.PRNGKey(0))  # for profile_step.py
    return run


def loadavg():
    """1, 5 and 15 minute load averages (host-side; None where /proc is missing)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return None


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "cpu": cpu, "devices": jax.device_count(),
            "cpus_used": len(os.sched_getaffinity(0)), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "unet_jax_xla_cpu_flags": xla_cpu_flags_applied()}


def add_common_args(p):
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--tile", type=int, default=572)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per configuration (the first compiles)")
    p.add_argument("--threads", type=int, default=None, help="pin to this many CPUs (default: all allowed)")


def main(argv=None):
    configure_cpu()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--impl", action="append", help="IMPL[:XLA], repeatable; the first is the baseline")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (e.g. 989 for H100 bf16)")
    a = p.parse_args(argv)
    set_threads(a.threads)
    specs = a.impl or ["fast"]
    configs = {s: parse_config(s) for s in specs}
    flops = 3 * unet_flops(a.tile, a.features, a.depth) * a.batch
    res = {"benchmark": "train_step", "features": a.features, "depth": a.depth, "tile": a.tile, "batch": a.batch,
           "dtype": a.dtype, "repeats": a.repeats, "flops_per_step": flops, "load_before": loadavg()}
    fns = {s: make_jax_step(a.features, a.depth, a.tile, a.batch, a.dtype, impl, compiler_options=opts)
           for s, (impl, opts) in configs.items()}
    timings = time_interleaved(fns, a.repeats, a.warmup)
    res["load_after"] = loadavg()
    res["machine"] = machine()
    base = timings[specs[0]]["median_s"]
    res["results"] = {}
    for s, r in timings.items():
        r.update(tiles_per_s=a.batch / r["median_s"], tflops=flops / r["median_s"] / 1e12,
                 ratio_to_first=r["median_s"] / base)
        if a.peak_tflops:
            r["mfu"] = r["tflops"] / a.peak_tflops
        res["results"][s] = r
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
