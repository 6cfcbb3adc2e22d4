"""Profile: where the U-Net train step's time goes on this machine (XLA:CPU), op by op and layer by layer.

    python benchmarks/profile_step.py ops --features 16 --threads 1 --impl fast
    python benchmarks/profile_step.py layers --features 16 --threads 1 --forms lax,shift,im2col --torch

``ops`` traces the jitted train step of ``train_step.py`` with ``jax.profiler`` and sums the executed XLA ops'
(thunks') durations per step, by op and by kind: 'conv' (forward 3x3 convolution), 'conv_input_grad',
'conv_kernel_grad', 'dot' (matrix products: up-convolutions, 1x1 head, matmul formulations), 'library' (YNNPACK
fusions that are neither), 'transpose/copy', 'elementwise/other'. With more than one thread, XLA runs independent
ops at once, so the sum can exceed the step time. ``layers`` times, for every 3x3 convolution of the network,
the forward, the input gradient and the kernel gradient separately for each formulation in ``--forms``
(interleaved, median of ``--repeats``), and with ``--torch`` the same three with PyTorch (``conv2d`` and
``aten.convolution_backward``). Prints one JSON object.
"""
import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_interleaved  # noqa: E402
from train_step import add_common_args, loadavg, machine, make_jax_step, parse_config, set_threads  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from unet_jax import configure_cpu  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# ops: per-thunk profile of the train step
# ---------------------------------------------------------------------------------------------------------------

def _hlo_ops(hlo_text):
    """{instruction name: (opcode, shape, fused-computation ops, text)} from optimized HLO text."""
    comps = {m.group(1): m.group(2) for m in re.finditer(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.S)}
    ops = {}
    for line in hlo_text.split("\n"):
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
        if not m:
            continue
        name, shape, opcode = m.groups()
        called = re.search(r"calls=%?([\w.\-]+)", line)
        inner = set(re.findall(r"= \S+ ([\w\-]+)\(", comps.get(called.group(1), ""))) if called else set()
        ops[name] = (opcode, shape, inner, line)
    return ops


def _kind(opcode, inner, line):
    body = inner | {opcode}
    if "convolution" in body:
        if "pad=" in line or re.search(r"window=\{size=\d+x\d+ pad", line):
            return "conv_input_grad"
        window = re.search(r"window=\{size=(\d+)x(\d+)", line)
        if window and int(window.group(1)) > 3:
            return "conv_kernel_grad"
        return "conv"
    if "dot" in body:
        return "dot"
    if "__ynn_fusion" in line:
        return "library"
    if body & {"transpose", "copy"}:
        return "transpose/copy"
    return "elementwise/other"


def profile_ops(run, steps=3, top=40):
    """Trace ``steps`` calls of ``run(i)`` and sum thunk durations per op and kind (ms per step)."""
    from jax.profiler import ProfileData
    jax.block_until_ready(run(0))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for i in range(steps):
                jax.block_until_ready(run(1 + i))
        data = ProfileData.from_file(glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0])
    per_op = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for ev in line.events:
                if ev.name.startswith(("ThunkExecutor", "Threadpool", "end:", "SlinkyThreadPool")):
                    continue
                per_op[ev.name] += ev.duration_ns / steps / 1e6
    return per_op


def ops_main(a, impl, opts):
    run = make_jax_step(a.features, a.depth, a.tile, a.batch, a.dtype, impl, compiler_options=opts)
    step_s = time_interleaved({"step": run}, a.repeats, a.warmup)["step"]["median_s"]
    per_op = profile_ops(run)
    # The optimized HLO of the same step names what each thunk is.
    hlo = run.lower().compile(compiler_options=opts).as_text()
    ops = _hlo_ops(hlo)
    kinds = collections.Counter()
    rows = []
    for name, ms in per_op.most_common():
        opcode, shape, inner, line = ops.get(name, ("?", "?", set(), ""))
        kind = _kind(opcode, inner, line) if name in ops else "unknown"
        kinds[kind] += ms
        meta = re.search(r'op_name="([^"]*)"', line)
        rows.append({"op": name, "ms": round(ms, 2), "kind": kind, "shape": shape,
                     "source": meta.group(1)[-80:] if meta else ""})
    return {"step_median_s": step_s, "thunk_ms_total": round(sum(per_op.values()), 1),
            "ms_by_kind": {k: round(v, 1) for k, v in kinds.most_common()}, "top_ops": rows[:a.top]}


# ---------------------------------------------------------------------------------------------------------------
# layers: forward / input gradient / kernel gradient of every 3x3 convolution
# ---------------------------------------------------------------------------------------------------------------

def network_convs(features, depth=4, tile=572, in_channels=1):
    """(H_in, C_in, C_out) of each 3x3 VALID convolution of the network, in forward order (host-side)."""
    layers, s, c = [], tile, in_channels
    for level in range(depth):
        f = features * 2 ** level
        layers += [(s, c, f), (s - 2, f, f)]
        s, c = (s - 4) // 2, f
    f = features * 2 ** depth
    layers += [(s, c, f), (s - 2, f, f)]
    s, c = s - 4, f
    for level in reversed(range(depth)):
        f = features * 2 ** level
        s *= 2
        layers += [(s, 2 * f, f), (s - 2, f, f)]
        s -= 4
    return layers


def _lax(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _im2col(x, k):
    from unet_jax.layers import _shifted
    p = jnp.concatenate(_shifted(x, 3, 3), axis=-1)
    return jnp.dot(p, k.reshape(-1, k.shape[-1]))


def _shift9(x, k):
    from unet_jax.layers import _shifted
    return sum(jnp.dot(v, k[t // 3, t % 3]) for t, v in enumerate(_shifted(x, 3, 3)))


def _forms():
    from unet_jax.layers import conv3x3_shift
    return {"lax": _lax, "shift": conv3x3_shift, "im2col": _im2col, "shift9": _shift9}


def layers_main(a, opts):
    forms = _forms()
    names = a.forms.split(",")
    for n in names:
        if n not in forms:
            raise ValueError(f"--forms entries must be in {tuple(forms)}, got {n!r}")
    dt = jnp.bfloat16 if a.dtype == "bfloat16" else jnp.float32
    if a.torch:
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows, totals = [], collections.Counter()
    for (h, c, o) in network_convs(a.features, a.depth, a.tile):
        if c > a.shift_max_channels and "shift" in names and len(names) == 1:
            continue
        key = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(key[0], (a.batch, h, h, c), dt)
        k = (jax.random.normal(key[1], (3, 3, c, o)) * 0.05).astype(dt)
        g = jax.random.normal(key[2], (a.batch, h - 2, h - 2, o), dt)
        fns = {}
        for n in names:
            if n == "shift" and c > a.shift_max_channels:
                continue
            f = forms[n]
            for part, fn in (("fwd", lambda x, k, g, f=f: f(x, k)),
                             ("dx", lambda x, k, g, f=f: jax.vjp(lambda x_: f(x_, k), x)[1](g)[0]),
                             ("dk", lambda x, k, g, f=f: jax.vjp(lambda k_: f(x, k_), k)[1](g)[0])):
                compiled = jax.jit(fn).lower(x, k, g).compile(compiler_options=opts)
                fns[f"{n}_{part}"] = lambda i, compiled=compiled: compiled(x, k, g)
        if a.torch:
            fns.update(_torch_parts(a.batch, h, c, o, a.dtype))
        t = time_interleaved(fns, a.repeats, a.warmup)
        row = {"H": h, "C_in": c, "C_out": o}
        for n, r in t.items():
            row[n + "_ms"] = round(r["median_s"] * 1e3, 2)
            totals[n] += r["median_s"] * 1e3
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {"layers": rows, "total_ms": {k: round(v, 1) for k, v in totals.items()}}


def _torch_parts(n, h, c, o, dtype):
    import torch
    tdt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    x = torch.randn(n, c, h, h, dtype=tdt)
    k = (torch.randn(o, c, 3, 3) * 0.05).to(tdt)
    g = torch.randn(n, o, h - 2, h - 2, dtype=tdt)
    back = torch.ops.aten.convolution_backward
    args = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    return {"torch_fwd": lambda i: torch.nn.functional.conv2d(x, k),
            "torch_dx": lambda i: back(g, x, k, None, *args, [True, False, False]),
            "torch_dk": lambda i: back(g, x, k, None, *args, [False, True, False])}


def main(argv=None):
    configure_cpu()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["ops", "layers"])
    add_common_args(p)
    p.add_argument("--impl", default="fast", help="ops: IMPL[:XLA] as in train_step.py; layers: only the :XLA part "
                                                  "is used")
    p.add_argument("--top", type=int, default=40, help="ops: how many of the slowest ops to list")
    p.add_argument("--forms", default="lax,shift,im2col", help="layers: formulations, from lax, shift, im2col, "
                                                               "shift9")
    p.add_argument("--shift-max-channels", type=int, default=4, help="layers: run 'shift' up to this C_in")
    p.add_argument("--torch", action="store_true", help="layers: also time PyTorch's convolution")
    a = p.parse_args(argv)
    set_threads(a.threads)
    impl, opts = parse_config(a.impl)
    res = {"benchmark": "profile_step", "mode": a.mode, "features": a.features, "tile": a.tile, "batch": a.batch,
           "dtype": a.dtype, "impl": a.impl, "load_before": loadavg()}
    t = time.perf_counter()
    res.update(ops_main(a, impl, opts) if a.mode == "ops" else layers_main(a, opts))
    res.update(load_after=loadavg(), seconds=round(time.perf_counter() - t, 1), machine=machine())
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
