"""The prepared accelerator run (benchmarks/gpu_run.sh, benchmarks/gpu_run.py) in its --smoke form on the CPU, so
that it cannot rot between GPU sessions, and train.time_limit, which its ISBI step relies on.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unet_jax import checkpoint as ck
from unet_jax import train
from unet_jax.config import base_config

REPO = Path(__file__).resolve().parents[1]


def _gpu_run_module():
    spec = importlib.util.spec_from_file_location("gpu_run", REPO / "benchmarks" / "gpu_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_run_smoke(tmp_path, isbi_dir):
    """The whole script with --smoke: every step runs, the JSON has each section's figures, the files are there."""
    out = tmp_path / "out"
    no_wheels = tmp_path / "no_wheels"     # the carried .whl/ (if any) is for the device's Python
    no_wheels.mkdir()
    env = dict(os.environ, PYTHON=sys.executable, UNET_JAX_ISBI_DIR=str(isbi_dir), TMPDIR=str(tmp_path))
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--smoke", "--wheels", str(no_wheels),
                        str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "=== GPU run summary" in r.stdout

    res = json.loads((out / "gpu_results.json").read_text())
    assert set(res) >= {"run", "machine", "train_step", "inference", "isbi"}
    assert res["run"]["smoke"] is True
    assert {k: v["status"] for k, v in res["run"]["steps"].items()} == {
        "train_step": "done", "inference": "done", "isbi": "done"}
    assert {"device", "backend", "jax", "peak_tflops"} <= set(res["machine"])

    rows = res["train_step"]["results"]
    jax_rows = [x for x in rows if x["framework"] == "jax"]
    assert {x["dtype"] for x in jax_rows} == {"float32", "bfloat16"}
    for x in rows:
        assert {"variant", "batch", "median_s", "steps_per_s", "images_per_s", "tflops", "mfu",
                "first_call_s"} <= set(x)
        assert x["steps_per_s"] > 0 and x["images_per_s"] == pytest.approx(x["batch"] * x["steps_per_s"])
    assert res["train_step"]["errors"] == []

    inf = res["inference"]["results"]
    assert [x["tta"] for x in inf] == [False, True]
    for x in inf:
        assert {"seconds", "mpix_per_s", "tiles_per_s", "network_tiles_per_s", "peak_bytes_in_use"} <= set(x)
        assert x["mpix_per_s"] > 0

    isbi = res["isbi"]
    assert isbi["dtype"] in ("float32", "bfloat16") and isbi["time_limit_s"] > 0
    assert isbi["train"]["status"] == "done" and isbi["train"]["steps"] == 3
    assert isbi["evaluate"]["status"] == "done" and isbi["evaluate"]["step"] == 3
    mean = isbi["evaluate"]["mean"]
    assert mean and all(isinstance(v, (int, float)) for v in mean.values()) and "iou" in mean

    files = {p.name for p in out.iterdir()}
    assert {"gpu_results.json", "gpu_run.log", "isbi_eval_metrics.csv", "isbi_train_metrics.jsonl"} <= files
    assert len(files) <= 8                       # what the device machine hands back
    assert "mean" in (out / "isbi_eval_metrics.csv").read_text()
    assert "== isbi: exit 0" in (out / "gpu_run.log").read_text()
    assert not list(tmp_path.glob("unet_jax_gpu_run.*")), "the scratch folder should be removed"


def test_gpu_run_choices():
    g = _gpu_run_module()
    assert g.peak_tflops("NVIDIA H100 80GB HBM3") == {"match": "H100", "bfloat16": 989.0, "float32": 494.0}
    assert g.peak_tflops("NVIDIA H100 PCIe")["bfloat16"] == 756.0
    assert g.peak_tflops("NVIDIA H200")["bfloat16"] == 989.0
    assert g.peak_tflops("cpu") is None
    cases = g.train_step_cases(["float32", "bfloat16"], [1, 4, 8], torch_ok=True, compile_ok=True, plain=True)
    assert cases[:4] == [("eager", "bfloat16", 8), ("eager", "float32", 8), ("eager", "bfloat16", 1),
                         ("eager", "float32", 1)]
    assert cases[4] == ("compile", "bfloat16", 8) and ("plain", "float32", 8) in cases and len(cases) == 10

    def res(bf16, f32):
        return {"train_step": {"results": [
            dict(framework="jax", variant="fast", batch=1, dtype="bfloat16", images_per_s=bf16),
            dict(framework="jax", variant="fast", batch=1, dtype="float32", images_per_s=f32),
            dict(framework="torch", variant="eager", batch=1, dtype="bfloat16", images_per_s=1000.0)]}}
    assert g.choose_dtype(res(20.0, 10.0), "auto")[0] == "bfloat16"
    assert g.choose_dtype(res(10.2, 10.0), "auto")[0] == "float32"
    assert g.choose_dtype({}, "auto")[0] == "float32"
    assert g.choose_dtype(res(20.0, 10.0), "float32") == ("float32", "requested")


def _tiny_config(data_dir):
    c = base_config()
    c.model.features, c.model.depth = 4, 2
    c.data.update(num_train=2, num_validation=1, image_size=64, data_dir=str(data_dir))
    c.train.update(tile_size=60, batch_size=1, num_steps=40, log_every=5, eval_every=0, checkpoint_every=0)
    c.eval.update(tile_size=60, batch_size=4)
    c.optimizer.update(name="adam", learning_rate=1e-3)
    return c


def test_time_limit_stops_validates_saves_and_resumes(tmp_path):
    c = _tiny_config(tmp_path / "tfds")
    c.train.time_limit = 1e-3                     # passed before the first step ends: stop after step 1
    result = train.train_and_evaluate(c, tmp_path / "run")
    assert result["step"] == 1
    assert "validation_pixel_mismatch" in result   # validated like a last step
    steps = sorted(int(p.name) for p in ck.checkpoint_dir(tmp_path / "run").iterdir() if p.name.isdigit())
    assert steps == [1]                            # and checkpointed
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "validation"] == [1]

    c.train.time_limit = 0.0                       # 0 = no limit: the same command continues to num_steps
    result = train.train_and_evaluate(c, tmp_path / "run")
    assert result["step"] == 40 and "validation_pixel_mismatch" in result


def test_time_limit_must_not_be_negative(tmp_path):
    c = _tiny_config(tmp_path / "tfds")
    c.train.time_limit = -1.0
    with pytest.raises(ValueError, match="train.time_limit"):
        train.train_and_evaluate(c, tmp_path / "run")
