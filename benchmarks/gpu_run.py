"""The steps of the prepared accelerator run (``benchmarks/gpu_run.sh``), one subcommand each.

``gpu_run.sh`` runs every step in its own process under ``timeout``; each step writes its part of the results
file (``--results``, default ``gpu_results.json``) after every measurement, so a step that is stopped still leaves
what it measured. The file is one JSON object::

    run          start time, budget, settings; run.steps.NAME = {status, rc, seconds, limit_s} per step
    machine      jax/jaxlib/flax versions, backend, device kind and count, torch version and GPU, peak table entry
    train_step   (a) the train step of the network: rows of {framework, variant, dtype, batch, steps_per_s,
                 images_per_s, tflops, mfu, ...}; 'skipped' lists cases left out for lack of time
    inference    (b) overlap-tile inference of one large image with and without 8-fold TTA: rows of {dtype, tta,
                 seconds, mpix_per_s, tiles_per_s, network_tiles_per_s, peak_bytes_in_use, ...}
    isbi         (c) the paper recipe on ISBI 2012 for the remaining time (train.time_limit), then
                 ``unet-jax evaluate --tta`` on the held-out slices 25-29: train and evaluate sections

Subcommands (``python benchmarks/gpu_run.py COMMAND --help``): ``install-wheels`` (standard library only: installs
the carried wheels whose distributions are missing), ``init``, ``status`` and ``summary`` (standard library only),
``train-step``, ``inference``, ``isbi``.

Model FLOPs per train step are 3x the forward convolution FLOPs (``unet_jax.geometry.unet_flops``); MFU is model
FLOP/s over the device's dense tensor-core peak (bf16 for bfloat16 compute, TF32 for float32, which both
frameworks run on TF32 tensor cores by default), looked up by ``jax.devices()[0].device_kind`` in ``PEAK_TFLOPS``
or given with ``--peak-tflops``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Dense tensor-core peaks in TFLOP/s (vendor data sheets, no sparsity): (device_kind substring, bf16, tf32).
# The first match wins, so the more specific names come first.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 418.0),
    ("H200", 989.0, 494.0),     # also GH200
    ("H100", 989.0, 494.0),     # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
)

# Distributions never installed from the carried wheels even in the fallback (they must be the device's own).
NEVER_SHADOW = {"numpy", "scipy", "jax", "jaxlib", "ml-dtypes", "flax", "optax", "orbax-checkpoint", "torch",
                "scikit-image", "tifffile", "tensorstore", "pillow"}


# ------------------------------------------------------------------------------------------------------------
# Results file (standard library only)
# ------------------------------------------------------------------------------------------------------------

def load_results(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def update_results(path, key, value) -> None:
    """Set ``results[key] = value`` in the JSON file, written atomically (a killed writer leaves the old file)."""
    path = Path(path)
    data = load_results(path)
    data[key] = value
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_init(a):
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps({"run": {
        "started": _now_iso(), "budget_s": a.budget, "smoke": a.smoke, "settings": a.settings, "commit": commit,
        "python": sys.version.split()[0], "steps": {}}}, indent=1))


def cmd_status(a):
    run = load_results(a.results).get("run", {})
    if a.status:
        status = a.status
    elif a.rc == 0:
        status = "done"
    elif a.rc in (124, 137):
        status = "timeout"
    else:
        status = "error"
    run.setdefault("steps", {})[a.step] = {"status": status, "rc": a.rc, "seconds": a.seconds, "limit_s": a.limit}
    update_results(a.results, "run", run)


# ------------------------------------------------------------------------------------------------------------
# install-wheels (standard library only: runs before the carried packages are importable)
# ------------------------------------------------------------------------------------------------------------

def _dist_name(wheel: Path) -> str:
    return wheel.name.split("-")[0].replace("_", "-").lower()


def _installed_version(dist: str):
    import importlib.metadata
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip_target(wheels, target) -> bool:
    """pip install --target; where this Python has no pip, the wheels are unpacked (what pip does for these)."""
    if not wheels:
        return True
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        import zipfile
        print("install-wheels: no pip here: unpacking the wheels", flush=True)
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(target)
        return True
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--upgrade", "--target", str(target)] + [str(w) for w in wheels]
    r = subprocess.run(cmd)
    if r.returncode:
        print(f"install-wheels: pip exited {r.returncode}", flush=True)
    return r.returncode == 0


def _import_check(target, modules) -> bool:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(REPO)] + (
        [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    r = subprocess.run([sys.executable, "-c", code] + list(modules), env=env, capture_output=True, text=True)
    if r.returncode:
        print("install-wheels: import check failed:\n" + r.stderr[-3000:], flush=True)
    return r.returncode == 0


def cmd_install_wheels(a):
    """Install into ``target`` the carried wheels whose distributions this Python lacks (never shadowing the
    device's own packages), then check that the package's data modules import. If they do not, the carried
    wheels of the other pure support packages (e.g. a newer protobuf) are added as a fallback and checked again."""
    wheels = sorted(Path(a.wheels).glob("*.whl"))
    target = Path(a.target)
    target.mkdir(parents=True, exist_ok=True)
    missing, present = [], []
    for w in wheels:
        version = _installed_version(_dist_name(w))
        (present if version else missing).append(w)
        print(f"  {_dist_name(w):28s} {'device has ' + version if version else 'missing: installing ' + w.name}")
    ok = _pip_target(missing, target)
    modules = a.check or []
    if modules and not _import_check(target, modules):
        fallback = [w for w in present if _dist_name(w) not in NEVER_SHADOW]
        print(f"install-wheels: retrying with the carried {', '.join(_dist_name(w) for w in fallback)} as well")
        ok = _pip_target(fallback, target) and _import_check(target, modules)
    print(f"install-wheels: {'ok' if ok else 'FAILED (the ISBI step will fail)'}; {len(missing)} installed into "
          f"{target}", flush=True)


# ------------------------------------------------------------------------------------------------------------
# Shared (jax)
# ------------------------------------------------------------------------------------------------------------

def _bench_imports():
    sys.path.insert(0, str(HERE))
    import train_step as ts
    return ts


def peak_tflops(device_kind: str):
    """(bf16, tf32) dense peaks of a device kind, or None."""
    for name, bf16, tf32 in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return {"match": name, "bfloat16": bf16, "float32": tf32}
    return None


def machine_info(torch=None) -> dict:
    import importlib.metadata
    import jax
    ts = _bench_imports()
    m = ts.machine()
    for dist in ("jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy"):
        try:
            m[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            m[dist] = None
    m["peak_tflops"] = peak_tflops(m["device"])
    m["default_matmul_precision"] = str(getattr(jax.config, "jax_default_matmul_precision", None))
    stats = _memory_stats()
    if stats:
        m["device_bytes_limit"] = stats.get("bytes_limit")
    if torch is not None:
        m["torch"] = torch.__version__
        m["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return m


def _memory_stats():
    import jax
    try:
        return jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend has memory statistics
        return {}


def _set_machine(results, torch=None):
    data = load_results(results)
    if "machine" not in data or (torch is not None and "torch" not in data["machine"]):
        update_results(results, "machine", machine_info(torch))


class Deadline:
    """Soft time limit of a step: whether a case expected to take ``need_s`` still fits."""

    def __init__(self, deadline):
        self.deadline = deadline

    def left(self):
        return float("inf") if not self.deadline else self.deadline - time.time()

    def fits(self, need_s):
        return self.left() >= need_s


# ------------------------------------------------------------------------------------------------------------
# (a) train step
# ------------------------------------------------------------------------------------------------------------

def _skipped_for_time(deadline, need, step, name, section, results_path) -> bool:
    """Record and announce a case left out because about ``need`` seconds are not left; True if left out."""
    if deadline.fits(need):
        return False
    print(f"{step}: skipping {name}: {deadline.left():.0f} s left, about {need:.0f} s needed", flush=True)
    section["skipped"].append(name)
    update_results(results_path, step, section)
    return True


def train_step_cases(dtypes, batches, torch_ok, compile_ok, plain):
    """The cases of step (a) in the order they are measured (most wanted first): (kind, dtype, batch), kind
    'eager' = unet-jax 'fast' and PyTorch eager interleaved, 'compile' = torch.compile, 'plain' = unet-jax 'plain'.
    First the largest batch (the comparison with NVIDIA's figures) and batch 1 (the paper's recipe), then
    torch.compile in bfloat16 at the largest batch, the other batches, unet-jax 'plain' and the float32 rest;
    bfloat16 before float32."""
    dtypes = sorted(dtypes, key=lambda d: d != "bfloat16")
    big = max(batches)
    first = [big] + ([1] if 1 in batches and big != 1 else [])
    rest = sorted(b for b in batches if b not in first)
    cases = [("eager", d, b) for b in first for d in dtypes]
    compiled = [("compile", d, big) for d in dtypes] if torch_ok and compile_ok else []
    plains = [("plain", d, big) for d in dtypes] if plain else []
    return cases + compiled[:1] + [("eager", d, b) for b in rest for d in dtypes] + plains[:1] + compiled[1:] + \
        plains[1:]


def cmd_train_step(a):
    if not a.no_torch:   # JAX and PyTorch share the GPU: JAX must not take 75% of it up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
    import gc

    import jax

    from unet_jax import configure_cpu
    configure_cpu()
    ts = _bench_imports()
    from common import time_interleaved
    from unet_jax.geometry import unet_flops
    torch = None
    if not a.no_torch:
        try:
            import torch
        except ImportError:
            print("train-step: PyTorch is not installed: unet-jax only", flush=True)
    if torch is not None:
        from compare_pytorch import make_torch_step, torch_device
        tdev = torch_device("auto")
        if tdev == "cpu" and jax.default_backend() != "cpu":
            print("train-step: PyTorch sees no GPU (CPU build?): unet-jax only", flush=True)
            torch = None
        else:
            torch.set_float32_matmul_precision("high")
    _set_machine(a.results, torch)
    peak = peak_tflops(jax.devices()[0].device_kind)
    if a.peak_tflops:
        peak = {"match": "--peak-tflops", "bfloat16": a.peak_tflops[0], "float32": a.peak_tflops[-1]}
    deadline = Deadline(a.deadline)
    section = {"config": dict(features=a.features, depth=a.depth, tile=a.tile, batches=a.batches, dtypes=a.dtypes,
                              repeats=a.repeats, warmup=a.warmup, optimizer="sgd momentum 0.99",
                              flops_per_image=3 * unet_flops(a.tile, a.features, a.depth),
                              torch_device=tdev if torch is not None else None,
                              xla_mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")),
               "peak_tflops": peak, "results": [], "skipped": [], "errors": []}
    update_results(a.results, "train_step", section)
    flops_per_image = section["config"]["flops_per_image"]
    cases = train_step_cases(a.dtypes, a.batches, torch is not None, not a.no_torch_compile, not a.no_plain)
    took = {}
    for kind, dtype, batch in cases:
        name = f"{kind} {dtype} batch {batch}"
        need = max(took.get(kind, [a.min_case_s if kind != "compile" else 3 * a.min_case_s]))
        if _skipped_for_time(deadline, need, "train_step", name, section, a.results):
            continue
        print(f"train-step: {name}", flush=True)
        t0 = time.time()
        fns, build_s = {}, {}
        try:
            if kind in ("eager", "plain"):
                impl = "fast" if kind == "eager" else "plain"
                t_build = time.time()
                fns[("jax", impl)] = ts.make_jax_step(a.features, a.depth, a.tile, batch, dtype, impl)
                build_s[("jax", impl)] = time.time() - t_build
            if torch is not None and kind in ("eager", "compile"):
                t_build = time.time()
                fns[("torch", kind)] = make_torch_step(a.features, a.depth, a.tile, batch, dtype, device=tdev,
                                                       compile=kind == "compile")[0]
                build_s[("torch", kind)] = time.time() - t_build
            if not fns:
                continue
            timings = time_interleaved(dict(fns), a.repeats, a.warmup)
        except Exception as e:  # noqa: BLE001 - a failing case (e.g. out of memory, no compiler) must not stop the rest
            print(f"train-step: {name} failed: {type(e).__name__}: {e}"[:2000], flush=True)
            section["errors"].append({"case": name, "error": f"{type(e).__name__}: {e}"[:2000]})
            update_results(a.results, "train_step", section)
            continue
        finally:
            fns.clear()
            gc.collect()
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        rows = {}
        for (framework, variant), r in timings.items():
            tflops = flops_per_image * batch / r["median_s"] / 1e12
            row = dict(framework=framework, variant=variant, dtype=dtype, batch=batch, median_s=r["median_s"],
                       min_s=r["min_s"], steps_per_s=1.0 / r["median_s"], images_per_s=batch / r["median_s"],
                       tflops=tflops, mfu=tflops / peak[dtype] if peak else None,
                       first_call_s=r["first_call_s"], build_s=build_s.get((framework, variant)))
            rows[framework] = row
        if "jax" in rows and "torch" in rows:
            rows["jax"]["ratio_jax_over_torch_time"] = rows["jax"]["median_s"] / rows["torch"]["median_s"]
        section["results"].extend(rows.values())
        update_results(a.results, "train_step", section)
        took.setdefault(kind, []).append(time.time() - t0)
        for row in rows.values():
            print(f"  {row['framework']:5s} {row['variant']:7s} {row['images_per_s']:9.2f} img/s "
                  f"{row['tflops']:8.2f} TFLOP/s mfu {row['mfu'] if row['mfu'] is not None else float('nan'):.3f} "
                  f"(first call {row['first_call_s']:.1f} s)", flush=True)


# ------------------------------------------------------------------------------------------------------------
# (b) tiled inference
# ------------------------------------------------------------------------------------------------------------

def cmd_inference(a):
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    sys.path.insert(0, str(HERE))
    from common import random_variables, throughput_s, time_calls

    from unet_jax import configure_cpu, tiling
    from unet_jax.geometry import unet_flops
    from unet_jax.model import UNet
    configure_cpu()

    _set_machine(a.results)
    deadline = Deadline(a.deadline)
    rs = np.random.RandomState(0)
    image = rs.rand(a.size, a.size).astype(np.float32)
    grid = tiling.tile_grid(image.shape, a.tile, depth=a.depth)
    section = {"config": dict(features=a.features, depth=a.depth, tile=a.tile, image=a.size, batch_size=a.batch_size,
                              repeats=a.repeats, tiles=grid.num_tiles, out_tile=grid.out_size,
                              flops_per_tile=unet_flops(a.tile, a.features, a.depth)),
               "note": "peak_bytes_in_use is the process's high-water mark so far (cases run in this order)",
               "results": [], "skipped": [], "errors": []}
    update_results(a.results, "inference", section)
    took = []
    for dtype in a.dtypes:
        model = UNet(features=a.features, depth=a.depth, dropout_rate=0.0,
                     dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
        variables = random_variables(model, (1, a.tile, a.tile, 1))
        apply_fn = functools.partial(model.apply, train=False)   # one object per model: compilations are reused
        for tta in (False, True):
            name = f"{dtype} tta={tta}"
            passes = 8 if tta else 1
            # expected: a compilation as long as the longest so far, and repeats + 1 runs at the measured speed
            need = max(c for c, _ in took) + (a.repeats + 1) * max(r for _, r in took) * passes if took else 0.0
            if _skipped_for_time(deadline, need, "inference", name, section, a.results):
                continue
            print(f"inference: {a.size}x{a.size}, {name}", flush=True)
            try:
                run = functools.partial(tiling.predict_tiled, apply_fn, image, a.tile, depth=a.depth,
                                        batch_size=a.batch_size, tta=tta, variables=variables)
                timed = time_calls(run, a.repeats)
                first, seconds = timed["first_call_s"], timed["median_s"]
                # The network alone on one batch of tiles (no host-side tiling and stitching).
                predictor = tiling.make_batch_predictor(apply_fn, tta=tta, variables=variables)
                batch = jnp.asarray(rs.rand(a.batch_size, a.tile, a.tile, 1).astype(np.float32))
                predictor(batch).block_until_ready()
                net_s = throughput_s(lambda: predictor(batch), max(2, a.repeats * 2))
            except Exception as e:  # noqa: BLE001
                print(f"inference: {name} failed: {type(e).__name__}: {e}"[:2000], flush=True)
                section["errors"].append({"case": name, "error": f"{type(e).__name__}: {e}"[:2000]})
                update_results(a.results, "inference", section)
                continue
            stats = _memory_stats()
            row = dict(dtype=dtype, tta=tta, seconds=seconds, first_call_s=first,
                       mpix_per_s=a.size ** 2 / 1e6 / seconds,
                       tiles_per_s=grid.num_tiles * passes / seconds,
                       network_tiles_per_s=a.batch_size * passes / net_s,
                       network_tflops=a.batch_size * passes * section["config"]["flops_per_tile"] / net_s / 1e12,
                       peak_bytes_in_use=stats.get("peak_bytes_in_use"), bytes_limit=stats.get("bytes_limit"))
            section["results"].append(row)
            update_results(a.results, "inference", section)
            took.append((max(first - seconds, 0.0), seconds / passes))
            print(f"  {row['mpix_per_s']:.2f} Mpx/s, {row['seconds']:.2f} s, network alone "
                  f"{row['network_tiles_per_s']:.1f} tiles/s, peak {row['peak_bytes_in_use']} bytes", flush=True)
        del variables
        jax.clear_caches()


# ------------------------------------------------------------------------------------------------------------
# (c) ISBI 2012, paper recipe, for the remaining time
# ------------------------------------------------------------------------------------------------------------

def choose_dtype(results: dict, requested: str):
    """'float32' or 'bfloat16' for step (c): the one requested, or with 'auto' bfloat16 when step (a) measured the
    unet-jax step at the smallest batch faster (by at least 5%) in bfloat16; (dtype, reason)."""
    if requested != "auto":
        return requested, "requested"
    rows = [r for r in results.get("train_step", {}).get("results", [])
            if r["framework"] == "jax" and r["variant"] == "fast"]
    if not rows:
        return "float32", "no train-step figures: the paper's float32"
    b = min(r["batch"] for r in rows)
    speed = {r["dtype"]: r["images_per_s"] for r in rows if r["batch"] == b}
    if "bfloat16" in speed and "float32" in speed:
        ratio = speed["bfloat16"] / speed["float32"]
        dtype = "bfloat16" if ratio >= 1.05 else "float32"
        return dtype, f"batch {b}: bfloat16/float32 images/s = {ratio:.3f}"
    return "float32", f"batch {b}: not both dtypes measured"


def _read_jsonl(path):
    rows = []
    try:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    except (OSError, ValueError):
        pass
    return rows


def _run_logged(cmd, timeout_s, env=None):
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    try:
        rc = subprocess.run(cmd, timeout=max(timeout_s, 1), env=env).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, time.time() - t


def cmd_isbi(a):
    import shutil
    results = load_results(a.results)
    out_dir = Path(a.results).parent
    workdir = Path(a.workdir)
    dtype, reason = choose_dtype(results, a.dtype)
    deadline = a.deadline or (time.time() + 3600)
    time_limit = deadline - time.time() - a.eval_margin
    # Validation only at the end (the time goes to training); a checkpoint every 1000 steps in case the run
    # stops otherwise than by the time limit.
    overrides = [f"--config.data.root={Path(a.data).resolve()}", f"--config.model.dtype={dtype}",
                 f"--config.train.time_limit={time_limit:.0f}", "--config.train.eval_every=0",
                 "--config.train.checkpoint_every=1000"]
    if a.data_dir:
        overrides.append(f"--config.data.data_dir={a.data_dir}")
    overrides += [f"--config.{s}" for s in a.set or []]
    section = {"config_file": a.config, "overrides": overrides, "dtype": dtype, "dtype_reason": reason,
               "time_limit_s": round(time_limit), "train": {"status": "running"}, "evaluate": {}}
    update_results(a.results, "isbi", section)
    if time_limit < a.min_train_s:
        section["train"] = {"status": f"skipped: {time_limit:.0f} s left for training"}
        update_results(a.results, "isbi", section)
        print(f"isbi: skipped ({time_limit:.0f} s left for training)", flush=True)
        return
    py = sys.executable
    cmd = [py, "-m", "unet_jax.cli", "train", "--config", a.config, "--workdir", str(workdir)] + overrides
    rc, secs = _run_logged(cmd, deadline - time.time() - a.eval_margin / 3)
    rows = _read_jsonl(workdir / "metrics.jsonl")
    train_rows = [r for r in rows if r.get("split") == "train"]
    val_rows = [r for r in rows if r.get("split") == "validation"]
    steps = train_rows[-1]["step"] if train_rows else None
    rates = [r["tiles_per_second"] for r in train_rows[1:] if "tiles_per_second" in r]
    section["train"] = {"status": "done" if rc == 0 else f"exit {rc}", "seconds": secs, "steps": steps,
                        "last_train": train_rows[-1] if train_rows else None,
                        "validation": val_rows[-1] if val_rows else None,
                        "tiles_per_second_median": sorted(rates)[len(rates) // 2] if rates else None}
    update_results(a.results, "isbi", section)
    for src, dst in ((workdir / "metrics.jsonl", "isbi_train_metrics.jsonl"),
                     (workdir / "training_curves.png", "isbi_training_curves.png")):
        if src.exists():
            shutil.copyfile(src, out_dir / dst)
    ckpt_dir = workdir / "checkpoints"
    steps_saved = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []
    if not steps_saved:
        section["evaluate"] = {"status": "skipped: no checkpoint"}
        update_results(a.results, "isbi", section)
        return
    step = steps_saved[-1]
    eval_out = Path(a.eval_dir) if a.eval_dir else workdir / "eval_validation"
    cmd = [py, "-m", "unet_jax.cli", "evaluate", "--workdir", str(workdir), "--tta", "--step", str(step),
           "--output", str(eval_out)]
    rc, secs = _run_logged(cmd, deadline - time.time())
    section["evaluate"] = {"status": "done" if rc == 0 else f"exit {rc}", "seconds": secs, "step": step, "tta": True}
    metrics_json = eval_out / "metrics.json"
    if rc == 0 and metrics_json.exists():
        m = json.loads(metrics_json.read_text())
        section["evaluate"].update(mean=m.get("mean"), per_image=m.get("per_image"))
        shutil.copyfile(eval_out / "metrics.csv", out_dir / "isbi_eval_metrics.csv")
        overlays = sorted(eval_out.glob("*_overlay.png"))
        if overlays:
            shutil.copyfile(overlays[len(overlays) // 2], out_dir / "isbi_eval_overlay.png")
    update_results(a.results, "isbi", section)


# ------------------------------------------------------------------------------------------------------------
# summary (standard library only)
# ------------------------------------------------------------------------------------------------------------

def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def _metrics(d) -> str:
    """'name=value, ...' of a metrics record, without thresholds and bookkeeping."""
    if not d:
        return "-"
    return ", ".join(f"{k}={v:.4g}" for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and not k.endswith("_threshold") and k not in ("step", "time"))


def cmd_summary(a):
    r = load_results(a.results)
    m = r.get("machine", {})
    print(f"\n=== GPU run summary ({a.results}) ===")
    print(f"device: {m.get('device')} x{m.get('devices')}, backend {m.get('backend')}, jax {m.get('jax')}, "
          f"torch {m.get('torch')}; peak {m.get('peak_tflops')}")
    for name, s in r.get("run", {}).get("steps", {}).items():
        print(f"step {name}: {s['status']} (rc {s['rc']}, {s['seconds']} s of {s['limit_s']} s)")
    ts = r.get("train_step", {})
    if ts.get("results"):
        print("\n(a) train step | framework | variant | dtype | batch | img/s | steps/s | TFLOP/s | MFU | "
              "jax/torch time")
        for x in ts["results"]:
            print(f"  {x['framework']:5s} | {x['variant']:7s} | {x['dtype']:8s} | {x['batch']:3d} | "
                  f"{_fmt(x['images_per_s'], '.2f')} | {_fmt(x['steps_per_s'], '.2f')} | {_fmt(x['tflops'], '.1f')} | "
                  f"{_fmt(x['mfu'], '.3f')} | {_fmt(x.get('ratio_jax_over_torch_time'), '.2f')}")
    for key in ("skipped", "errors"):
        if ts.get(key):
            print(f"  {key}: {ts[key]}")
    inf = r.get("inference", {})
    if inf.get("results"):
        c = inf["config"]
        print(f"\n(b) inference {c['image']}x{c['image']}, tile {c['tile']}, {c['tiles']} tiles, batch "
              f"{c['batch_size']} | dtype | TTA | s | Mpx/s | tiles/s | network tiles/s | peak GiB")
        for x in inf["results"]:
            peak = x.get("peak_bytes_in_use")
            print(f"  {x['dtype']:8s} | {str(x['tta']):5s} | {_fmt(x['seconds'], '.2f')} | "
                  f"{_fmt(x['mpix_per_s'], '.2f')} | {_fmt(x['tiles_per_s'], '.1f')} | "
                  f"{_fmt(x['network_tiles_per_s'], '.1f')} | {_fmt(peak / 2 ** 30 if peak else None, '.2f')}")
    for key in ("skipped", "errors"):
        if inf.get(key):
            print(f"  {key}: {inf[key]}")
    isbi = r.get("isbi")
    if isbi:
        t, e = isbi.get("train", {}), isbi.get("evaluate", {})
        print(f"\n(c) ISBI 2012, {isbi.get('config_file')}, dtype {isbi.get('dtype')} ({isbi.get('dtype_reason')}), "
              f"time limit {isbi.get('time_limit_s')} s")
        print(f"  train: {t.get('status')}, {t.get('steps')} steps in {_fmt(t.get('seconds'), '.0f')} s, "
              f"{_fmt(t.get('tiles_per_second_median'), '.1f')} tiles/s; validation: {_metrics(t.get('validation'))}")
        print(f"  evaluate --tta (step {e.get('step')}): {e.get('status')}; mean: {_metrics(e.get('mean'))}")


# ------------------------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.set_defaults(func=fn)
        if name != "install-wheels":
            s.add_argument("--results", default="gpu_results.json", help="the results JSON file")
        return s

    s = add("install-wheels", cmd_install_wheels, "install the carried wheels whose distributions are missing")
    s.add_argument("wheels", help="folder of .whl files")
    s.add_argument("target", help="pip --target folder (put it first on PYTHONPATH)")
    s.add_argument("--check", nargs="*", help="modules that must import afterwards")

    s = add("init", cmd_init, "start a fresh results file")
    s.add_argument("--budget", type=float, default=None)
    s.add_argument("--smoke", action="store_true")
    s.add_argument("--settings", default="")

    s = add("status", cmd_status, "record a step's exit status")
    s.add_argument("--step", required=True)
    s.add_argument("--rc", type=int, default=0)
    s.add_argument("--seconds", type=float, default=None)
    s.add_argument("--limit", type=float, default=None)
    s.add_argument("--status", default=None, help="explicit status (e.g. skipped)")

    s = add("train-step", cmd_train_step, "(a) train step, unet-jax and PyTorch, float32 and bfloat16")
    s.add_argument("--features", type=int, default=64)
    s.add_argument("--depth", type=int, default=4)
    s.add_argument("--tile", type=int, default=572)
    s.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    s.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    s.add_argument("--repeats", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3, help="untimed calls per configuration (the first compiles)")
    s.add_argument("--no-torch", action="store_true")
    s.add_argument("--no-torch-compile", action="store_true")
    s.add_argument("--no-plain", action="store_true", help="skip unet-jax's plain formulation")
    s.add_argument("--peak-tflops", type=float, nargs="+", default=None, help="BF16 [TF32] peak, overrides the table")
    s.add_argument("--deadline", type=float, default=None, help="epoch seconds: start no case that would overrun")
    s.add_argument("--min-case-s", type=float, default=20.0, help="time assumed for a case before one was measured")

    s = add("inference", cmd_inference, "(b) overlap-tile inference of a large image, with and without TTA")
    s.add_argument("--features", type=int, default=64)
    s.add_argument("--depth", type=int, default=4)
    s.add_argument("--tile", type=int, default=572)
    s.add_argument("--size", type=int, default=4096)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--deadline", type=float, default=None)

    s = add("isbi", cmd_isbi, "(c) paper recipe on ISBI 2012 for the remaining time, then evaluate --tta")
    s.add_argument("--config", default=str(REPO / "experiments" / "isbi2012.py"))
    s.add_argument("--data", required=True, help="folder with the ISBI 2012 stacks")
    s.add_argument("--data-dir", default=None, help="where TFDS prepares the data set")
    s.add_argument("--workdir", required=True)
    s.add_argument("--eval-dir", default=None)
    s.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    s.add_argument("--set", action="append", help="more config overrides KEY=VALUE (without --config.)")
    s.add_argument("--deadline", type=float, default=None, help="epoch seconds when everything must be done")
    s.add_argument("--eval-margin", type=float, default=120.0,
                   help="seconds kept after training for the final validation, checkpoint and evaluate --tta")
    s.add_argument("--min-train-s", type=float, default=30.0, help="skip training with less time than this")

    s = add("summary", cmd_summary, "print the results as tables")
    a = p.parse_args(argv)
    a.func(a)


if __name__ == "__main__":
    main()
