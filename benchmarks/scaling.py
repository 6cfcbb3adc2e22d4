"""Benchmark: how the U-Net's cost scales with tile size, batch, image size and device count (issue 8).

    python benchmarks/scaling.py --plot scaling.png > scaling.json
    python benchmarks/scaling.py --quick --parts tile,inference      # tiny sizes; all parts: ~2 min at load 6

Four parts, chosen with ``--parts`` (default all: ``tile,batch,inference,devices``):

tile
    The network train step of ``train_step.py`` (forward in train mode, pixel-weighted cross-entropy, backward,
    SGD with momentum) at fixed ``--features`` and ``--batch`` for each ``--tiles`` input size: median seconds per
    step, seconds per output megapixel (output = ``output_size(tile)``: the VALID border makes small tiles
    expensive per labelled pixel) and its ratio to the largest tile's.
batch
    The same step at ``--batch-tile`` for each ``--batches``: tiles/s and its ratio to the first batch size's.
    A configuration the tile part has built already is reused (its ``first_call_s`` is then not a compile).
inference
    ``unet_jax.tiling.predict_tiled`` (``--inference-features``, ``--inference-tile``, batches of
    ``--inference-batch`` tiles) on random square images of each ``--sizes`` side, each size in a fresh
    subprocess: median seconds, seconds per megapixel (its ratio largest / smallest is 1.0 for linear scaling) and
    the peak resident-memory growth over all full-size calls (``VmHWM``, reset through ``/proc/self/clear_refs``
    after the compiling call on a one-tile image, minus ``VmRSS`` at that point; ``ru_maxrss`` growth where that
    file is not writable). The probability map it returns is ``size**2 * 2 * 4`` bytes; the growth minus
    that (``extra_minus_output_mb``) is the working memory of the tiling itself, which should stay flat.
devices
    The real pmapped train step of ``unet_jax.step.make_train_step`` (on-device tile sampling, augmentation,
    forward/backward, ``pmean`` of the gradients, optax update) on a random in-memory data set, in a subprocess
    per device count N in ``--devices`` started with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``;
    the same global batch ``--device-batch`` for every N (N = 2, batch 2: one tile per device). Reports the
    median step time and the speed-up over the first N. Simulated CPU devices share the machine's cores, so on a
    2-core machine expect little speed-up.

Every timing is a median over ``--repeats`` calls after ``--warmup`` untimed ones (the first compiles); the steps
of the tile and batch parts are timed interleaved (one step of each configuration per round) so that load from
other processes hits them alike. ``--quick`` picks tiny defaults (features 4, depth 3, small tiles and images,
2 repeats) for any size option not given. ``--plot PATH`` writes a 2x2 PNG (matplotlib, Agg);
``--from-json FILE --plot PATH`` redraws it from a saved result without running anything. ``--threads N``
pins the process (and its subprocesses) to N CPUs. Prints one JSON object with the load average before and after
each part.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import random_variables, time_calls, time_interleaved  # noqa: E402
from train_step import loadavg, machine, make_jax_step, set_threads  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from unet_jax import configure_cpu  # noqa: E402
from unet_jax.geometry import output_size, unet_flops  # noqa: E402

PARTS = ("tile", "batch", "inference", "devices")
NUM_CLASSES = 2

# Defaults: full run (about 5 minutes on 2 cores at load 6) and --quick (about 2 minutes there, mostly compiles).
DEFAULTS = dict(
    features=16, depth=4, tiles=[188, 284, 380, 476, 572], batch=1, batch_tile=284, batches=[1, 2, 4],
    inference_features=8, inference_tile=316, inference_batch=4, sizes=[256, 512, 1024, 2048],
    devices=[1, 2], device_tile=284, device_batch=2, device_image=512, repeats=5, warmup=2)
QUICK = dict(
    features=4, depth=3, tiles=[92, 124, 188], batch=1, batch_tile=124, batches=[1, 4],
    inference_features=4, inference_tile=124, inference_batch=4, sizes=[64, 128, 256, 512],
    devices=[1, 2], device_tile=124, device_batch=2, device_image=192, repeats=2, warmup=1)


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------

def _check_tile(name, tile, depth):
    """Output size of ``tile`` at ``depth`` (VALID); ValueError naming the option if the tile is not valid."""
    try:
        return output_size(tile, depth)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="tiny defaults for every size option not given")
    p.add_argument("--features", type=int, help="first-level channels of the tile/batch/devices steps "
                   f"(default {DEFAULTS['features']}; quick {QUICK['features']})")
    p.add_argument("--depth", type=int, help=f"poolings (default {DEFAULTS['depth']}; quick {QUICK['depth']})")
    p.add_argument("--tiles", type=int, nargs="+", help=f"tile part: input tiles (default {DEFAULTS['tiles']})")
    p.add_argument("--batch", type=int, help="tile part: batch (default 1)")
    p.add_argument("--batch-tile", type=int, help=f"batch part: tile (default {DEFAULTS['batch_tile']})")
    p.add_argument("--batches", type=int, nargs="+", help=f"batch part: batches (default {DEFAULTS['batches']})")
    p.add_argument("--inference-features", type=int, help="inference part: features (default 8)")
    p.add_argument("--inference-tile", type=int, help=f"inference part: tile (default {DEFAULTS['inference_tile']})")
    p.add_argument("--inference-batch", type=int, help="inference part: tiles per call (default 4)")
    p.add_argument("--sizes", type=int, nargs="+", help=f"inference part: image sides (default {DEFAULTS['sizes']})")
    p.add_argument("--devices", type=int, nargs="+", help="devices part: simulated CPU device counts, the first "
                   f"is the baseline (default {DEFAULTS['devices']})")
    p.add_argument("--device-tile", type=int, help=f"devices part: tile (default {DEFAULTS['device_tile']})")
    p.add_argument("--device-batch", type=int, help="devices part: global batch, a multiple of every device "
                   f"count (default {DEFAULTS['device_batch']})")
    p.add_argument("--device-image", type=int, help="devices part: side of the 4 random training images "
                   f"(default {DEFAULTS['device_image']})")
    p.add_argument("--repeats", type=int, help=f"timed calls per configuration (default {DEFAULTS['repeats']})")
    p.add_argument("--warmup", type=int, help="untimed calls per configuration, the first compiles "
                   f"(default {DEFAULTS['warmup']})")
    p.add_argument("--threads", type=int, default=None, help="pin to this many CPUs (default: all allowed)")
    p.add_argument("--plot", default=None, help="write a 2x2 PNG of the results here")
    p.add_argument("--from-json", default=None, help="with --plot: redraw the plot of this saved result, run nothing")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)   # internal: subprocess part as JSON
    a = p.parse_args(argv)
    if a.child is not None:
        return a
    if a.from_json is not None and a.plot is None:
        raise ValueError(f"--from-json needs --plot PATH, got --from-json {a.from_json!r} alone")
    base = QUICK if a.quick else DEFAULTS
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    parts = [s.strip() for s in a.parts.split(",") if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad or not parts:
        raise ValueError(f"--parts must be a comma-separated subset of {','.join(PARTS)}, got {a.parts!r}")
    a.parts = [s for s in PARTS if s in parts]
    for name in ("features", "depth", "batch", "inference_features", "inference_batch", "device_batch",
                 "device_image", "repeats"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.warmup < 1:
        raise ValueError(f"--warmup must be >= 1 (the first call compiles), got {a.warmup}")
    for name in ("batches", "sizes", "devices"):
        if min(getattr(a, name)) < 1:
            raise ValueError(f"--{name} must all be >= 1, got {getattr(a, name)}")
    for t in a.tiles:
        _check_tile("--tiles", t, a.depth)
    _check_tile("--batch-tile", a.batch_tile, a.depth)
    _check_tile("--inference-tile", a.inference_tile, a.depth)
    _check_tile("--device-tile", a.device_tile, a.depth)
    bad = [n for n in a.devices if a.device_batch % n]
    if bad:
        raise ValueError(f"--device-batch must be a multiple of every --devices count, got {a.device_batch} "
                         f"and {a.devices}")
    return a


# ----------------------------------------------------------------------------------------------------------------
# tile and batch parts (in this process)
# ----------------------------------------------------------------------------------------------------------------

def _steps(cache, a, configs):
    """{(tile, batch): run(i)} for ``configs``, built once per configuration (host-side)."""
    for cfg in configs:
        if cfg not in cache:
            cache[cfg] = make_jax_step(a.features, a.depth, cfg[0], cfg[1])
    return {cfg: cache[cfg] for cfg in configs}


def _timing_row(r):
    return {k: r[k] for k in ("median_s", "min_s", "cpu_median_s", "first_call_s", "times_s")}


def part_tile(a, cache):
    """Step time against tile size at fixed features and batch."""
    configs = [(t, a.batch) for t in a.tiles]
    timings = time_interleaved(_steps(cache, a, configs), a.repeats, a.warmup)
    rows = []
    for (t, b), r in timings.items():
        out = output_size(t, a.depth)
        mpx = b * out * out / 1e6
        flops = 3 * unet_flops(t, a.features, a.depth) * b
        rows.append(dict(tile=t, out=out, batch=b, out_mpx=mpx, **_timing_row(r),
                         s_per_out_mpx=r["median_s"] / mpx, tiles_per_s=b / r["median_s"],
                         gflops_per_s=flops / r["median_s"] / 1e9))
    best = rows[-1]["s_per_out_mpx"]
    for row in rows:
        row["s_per_out_mpx_vs_largest"] = row["s_per_out_mpx"] / best
    return dict(features=a.features, depth=a.depth, batch=a.batch, results=rows)


def part_batch(a, cache):
    """Step time and tiles/s against batch size at a fixed tile."""
    configs = [(a.batch_tile, b) for b in a.batches]
    timings = time_interleaved(_steps(cache, a, configs), a.repeats, a.warmup)
    rows = [dict(batch=b, **_timing_row(r), tiles_per_s=b / r["median_s"]) for (t, b), r in timings.items()]
    for row in rows:
        row["tiles_per_s_vs_first"] = row["tiles_per_s"] / rows[0]["tiles_per_s"]
        row["step_s_vs_first"] = row["median_s"] / rows[0]["median_s"]
    return dict(features=a.features, depth=a.depth, tile=a.batch_tile, out=output_size(a.batch_tile, a.depth),
                baseline_batch=a.batches[0], results=rows)


# ----------------------------------------------------------------------------------------------------------------
# Subprocess parts
# ----------------------------------------------------------------------------------------------------------------

def _proc_status_kb(field):
    """A ``kB`` field of /proc/self/status (host-side; None where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); True if it worked (host-side)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmHWM") is not None
    except OSError:
        return False


def child_inference(spec):
    """One image size of the inference part, in its own process; returns the result dict (host-side driver)."""
    import resource


    from unet_jax import tiling
    from unet_jax.model import UNet

    size, tile, depth, batch = spec["size"], spec["tile"], spec["depth"], spec["batch"]
    model = UNet(features=spec["features"], depth=depth, dropout_rate=0.0)
    variables = random_variables(model, (1, tile, tile, 1))
    apply_fn = model.apply
    image = np.random.RandomState(0).rand(size, size).astype(np.float32)
    grid = tiling.tile_grid(image.shape, tile, depth=depth)

    def run(img):
        return tiling.predict_tiled(apply_fn, img, tile, depth=depth, batch_size=batch, variables=variables)

    out = output_size(tile, depth)
    first_call_s = time_calls(lambda: run(image[:min(size, out), :min(size, out)]), 0)["first_call_s"]  # compiles
    # Peak memory from here on, over every full-size call: the first one included, since memory the allocator
    # keeps after it would otherwise count as baseline.
    exact = _reset_peak_rss()
    rss0 = _proc_status_kb("VmRSS") if exact else None
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = time_calls(lambda: run(image) is None, spec["repeats"], warmup=spec["warmup"] - 1)["times_s"]
    if exact:
        peak_kb, method = _proc_status_kb("VmHWM") - rss0, "VmHWM-VmRSS"
    else:
        peak_kb, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss0, "ru_maxrss growth"
    med = float(np.median(times))
    mpx = size * size / 1e6
    out_mb = size * size * NUM_CLASSES * 4 / 2 ** 20
    return dict(size=size, mpx=mpx, tiles=grid.num_tiles, median_s=med, min_s=float(np.min(times)),
                times_s=times, first_call_s=first_call_s, s_per_mpx=med / mpx, s_per_tile=med / grid.num_tiles,
                peak_extra_mb=peak_kb / 1024, output_mb=out_mb, extra_minus_output_mb=peak_kb / 1024 - out_mb,
                memory_method=method)


def child_devices(spec):
    """One device count of the devices part, in its own process; returns the result dict (host-side driver)."""
    from unet_jax import step as step_lib
    from unet_jax.config import base_config
    from unet_jax.data import sampler
    from unet_jax.model import create_model

    n = spec["devices"]
    if jax.device_count() != n:
        raise RuntimeError(f"expected {n} simulated devices, JAX sees {jax.device_count()} (XLA_FLAGS="
                           f"{os.environ.get('XLA_FLAGS', '')!r})")
    config = base_config()
    config.model.update(features=spec["features"], depth=spec["depth"])
    config.train.update(tile_size=spec["tile"], batch_size=spec["batch"], num_steps=1000)
    model = create_model(config)
    tile, out = spec["tile"], output_size(spec["tile"], spec["depth"])
    rng = np.random.default_rng(0)
    s = spec["image"]
    examples = [dict(image=rng.uniform(size=(s, s, 1)).astype(np.float32),
                     instances=rng.integers(0, 3, size=(s, s)).astype(np.int32),
                     weights=rng.uniform(0.5, 2.0, size=(s, s)).astype(np.float32)) for _ in range(4)]
    dataset = step_lib.replicate(jax.device_get(sampler.to_device_dataset(examples, tile, out)))
    state = jax.device_get(step_lib.create_train_state(jax.random.PRNGKey(0), config, model, 1))
    holder = [step_lib.shard_state(state)]
    p_step = step_lib.make_train_step(config, n)

    def run(i):
        holder[0], metrics = p_step(holder[0], dataset)       # the state is donated: keep only the new one
        return metrics["loss"]

    r = time_interleaved({"step": run}, spec["repeats"], spec["warmup"])["step"]
    loss = float(np.asarray(run(0)).reshape(-1)[0])
    return dict(devices=n, device_kinds=sorted({d.device_kind for d in jax.devices()}), **_timing_row(r),
                tiles_per_s=spec["batch"] / r["median_s"], final_loss=loss,
                xla_flags=os.environ.get("XLA_FLAGS", ""))


def _run_child(spec, env=None):
    """Run this script with ``--child SPEC`` and return the JSON dict it prints last (host-side)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t
    return res


def part_inference(a):
    """Tiled inference time and peak memory growth against image size, one subprocess per size."""
    rows = [_run_child(dict(part="inference", size=s, tile=a.inference_tile, depth=a.depth,
                            features=a.inference_features, batch=a.inference_batch, repeats=a.repeats,
                            warmup=a.warmup)) for s in sorted(a.sizes)]
    for row in rows:
        row["s_per_mpx_vs_smallest"] = row["s_per_mpx"] / rows[0]["s_per_mpx"]
    mpx = np.array([r["mpx"] for r in rows])
    ts = np.array([r["median_s"] for r in rows])
    slope, intercept = np.polyfit(mpx, ts, 1) if len(rows) > 1 else (ts[0] / mpx[0], 0.0)
    return dict(features=a.inference_features, depth=a.depth, tile=a.inference_tile,
                out_tile=output_size(a.inference_tile, a.depth), batch=a.inference_batch, results=rows,
                linear_fit=dict(s_per_mpx=float(slope), intercept_s=float(intercept)),
                s_per_mpx_largest_over_smallest=rows[-1]["s_per_mpx"] / rows[0]["s_per_mpx"],
                extra_minus_output_mb_range=[min(r["extra_minus_output_mb"] for r in rows),
                                             max(r["extra_minus_output_mb"] for r in rows)])


def part_devices(a):
    """The pmapped train step with 1 vs N simulated CPU devices (same global batch), one subprocess each."""
    rows = []
    for n in a.devices:
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        rows.append(_run_child(dict(part="devices", devices=n, features=a.features, depth=a.depth,
                                    tile=a.device_tile, batch=a.device_batch, image=a.device_image,
                                    repeats=a.repeats, warmup=a.warmup), env))
    for row in rows:
        row["speedup_vs_first"] = rows[0]["median_s"] / row["median_s"]
    return dict(features=a.features, depth=a.depth, tile=a.device_tile, out=output_size(a.device_tile, a.depth),
                global_batch=a.device_batch, augment=True, baseline_devices=a.devices[0], results=rows)


# ----------------------------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------------------------

def plot(res, path):
    """2x2 PNG of the parts that ran (host-side; matplotlib, Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    (ax_t, ax_b), (ax_i, ax_d) = axes
    for ax, part in ((ax_t, "tile"), (ax_b, "batch"), (ax_i, "inference"), (ax_d, "devices")):
        if part not in res:
            ax.text(0.5, 0.5, f"{part}: not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()

    if "tile" in res:
        p = res["tile"]
        rows = p["results"]
        x = [r["out_mpx"] for r in rows]
        ax_t.plot(x, [r["median_s"] for r in rows], "o-", color="C0")
        for r in rows:
            ax_t.annotate(f"{r['tile']}->{r['out']}", (r["out_mpx"], r["median_s"]), textcoords="offset points",
                          xytext=(4, -10), fontsize=7)
        ax_t.set_xlabel("output megapixels per step (tile input -> output)")
        ax_t.set_ylabel("train step, s (median)", color="C0")
        tw = ax_t.twinx()
        tw.plot(x, [r["s_per_out_mpx"] for r in rows], "s--", color="C3")
        tw.set_ylabel("s per output Mpx", color="C3")
        tw.set_yscale("log")
        ax_t.set_title(f"Step time vs tile (features {p['features']}, depth {p['depth']}, batch {p['batch']})",
                       fontsize=9)

    if "batch" in res:
        p = res["batch"]
        rows = p["results"]
        ax_b.bar([str(r["batch"]) for r in rows], [r["tiles_per_s"] for r in rows], color="C0")
        for i, r in enumerate(rows):
            ax_b.text(i, r["tiles_per_s"], f"{r['tiles_per_s_vs_first']:.2f}x", ha="center", va="bottom",
                      fontsize=8)
        ax_b.set_xlabel("batch (tiles per step)")
        ax_b.set_ylabel("tiles/s")
        ax_b.set_title(f"Throughput vs batch (tile {p['tile']}, features {p['features']}; ratio to batch "
                       f"{p['baseline_batch']})", fontsize=9)

    if "inference" in res:
        p = res["inference"]
        rows = p["results"]
        x = np.array([r["mpx"] for r in rows])
        ax_i.plot(x, [r["median_s"] for r in rows], "o", color="C0", label="predict_tiled")
        xs = np.linspace(0, x.max() * 1.05, 50)
        f = p["linear_fit"]
        ax_i.plot(xs, f["intercept_s"] + f["s_per_mpx"] * xs, "-", color="C0", alpha=0.6,
                  label=f"fit: {f['s_per_mpx']:.2f} s/Mpx + {f['intercept_s']:.2f} s")
        ax_i.set_xlabel("image megapixels")
        ax_i.set_ylabel("inference, s (median)", color="C0")
        tw = ax_i.twinx()
        tw.plot(x, [r["peak_extra_mb"] for r in rows], "s--", color="C3", label="peak RSS growth")
        tw.plot(x, [r["extra_minus_output_mb"] for r in rows], "^:", color="C2", label="growth - output array")
        tw.set_ylabel("MB", color="C3")
        tw.set_ylim(bottom=0)
        h1, l1 = ax_i.get_legend_handles_labels()
        h2, l2 = tw.get_legend_handles_labels()
        ax_i.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
        ax_i.set_title(f"Tiled inference vs image size (features {p['features']}, tile {p['tile']}->"
                       f"{p['out_tile']}, batch {p['batch']})", fontsize=9)

    if "devices" in res:
        p = res["devices"]
        rows = p["results"]
        ax_d.bar([f"{r['devices']} device{'s' if r['devices'] > 1 else ''}" for r in rows],
                 [r["median_s"] for r in rows], color=[f"C{i}" for i in range(len(rows))])
        for i, r in enumerate(rows):
            ax_d.text(i, r["median_s"], f"{r['median_s']:.3g} s ({r['speedup_vs_first']:.2f}x)", ha="center",
                      va="bottom", fontsize=8)
        ax_d.set_ylabel("pmap train step, s (median)")
        ax_d.set_title(f"Simulated CPU devices (global batch {p['global_batch']}, tile {p['tile']}, "
                       f"features {p['features']})", fontsize=9)

    m = res.get("machine", {})
    fig.suptitle(f"unet-jax scaling - {m.get('cpu', '')}, {m.get('cpus_used', '?')} CPUs, jax {m.get('jax', '')}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------

def main(argv=None):
    configure_cpu()
    a = parse_args(argv)
    if a.child is not None:
        spec = json.loads(a.child)
        fn = {"inference": child_inference, "devices": child_devices}[spec["part"]]
        print(json.dumps(fn(spec)))
        return
    if a.from_json is not None:
        with open(a.from_json) as f:
            plot(json.load(f), a.plot)
        return
    set_threads(a.threads)
    t0 = time.perf_counter()
    res = {"benchmark": "scaling", "quick": a.quick, "parts": a.parts, "repeats": a.repeats, "warmup": a.warmup,
           "load_before": loadavg()}
    cache = {}
    fns = {"tile": lambda: part_tile(a, cache), "batch": lambda: part_batch(a, cache),
           "inference": lambda: part_inference(a), "devices": lambda: part_devices(a)}
    for part in a.parts:
        before, t = loadavg(), time.perf_counter()
        res[part] = fns[part]()
        res[part].update(load_before=before, load_after=loadavg(), part_s=time.perf_counter() - t)
    res["load_after"] = loadavg()
    res["machine"] = machine()
    res["total_s"] = time.perf_counter() - t0
    if a.plot:
        plot(res, a.plot)
        res["plot"] = os.path.abspath(a.plot)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
