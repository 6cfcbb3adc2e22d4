"""unet_jax.logging_utils: metrics.jsonl, TensorBoard event files (read back with tensorboard's own readers), curves."""
import logging
import math
import re
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

from unet_jax import logging_utils as lu


def event_scalars(path):
    """(step, tag, value) of the scalars in one event file, in file order (tensorboard's reader)."""
    return [(event.step, v.tag, float(tensor_util.make_ndarray(v.tensor)))
            for event in EventFileLoader(str(path)).Load() for v in event.summary.value]


def test_event_file_round_trip(tmp_path, caplog):
    with lu.MetricWriter(tmp_path) as w:
        w.write_scalars(3, {"loss": 0.25, "pixel_mismatch": 0.125})
        w.write_scalars(7, {"loss": float("nan")}, "validation")
    (events,) = (tmp_path / "tensorboard").iterdir()
    got = event_scalars(events)
    assert got[:2] == [(3, "train/loss", 0.25), (3, "train/pixel_mismatch", 0.125)]
    assert got[2][:2] == (7, "validation/loss") and math.isnan(got[2][2])
    records = lu.read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [(3, "train"), (7, "validation")]
    # A damaged record fails its checksum: the reader stops before it.
    data = bytearray(events.read_bytes())
    data[-6] ^= 0xFF
    events.write_bytes(bytes(data))
    with caplog.at_level(logging.DEBUG, logger="tensorboard"):
        assert event_scalars(events) == got[:2]
    assert re.search(r"crc32|corrupt", caplog.text)


def test_resume_rewrites_tensorboard_steps(tmp_path):
    with lu.MetricWriter(tmp_path) as w:
        w.truncate_after(0)                       # what a fresh training run does
        for s in (5, 10, 15):
            w.write_scalars(s, {"loss": s})
        w.write_scalars(10, {"iou": 0.5}, "validation")
    with lu.MetricWriter(tmp_path) as w:          # resumed from a checkpoint at step 10
        w.truncate_after(10)
        w.write_scalars(15, {"loss": 1.5})
    assert [(r["step"], r.get("loss")) for r in lu.read_jsonl(tmp_path / "metrics.jsonl")] == [
        (5, 5), (10, 10), (10, None), (15, 1.5)]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 2   # the earlier run's event file stays
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "validation/iou"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(5, 5.0), (10, 10.0), (15, 1.5)]
    assert [(e.step, e.value) for e in acc.Scalars("validation/iou")] == [(10, 0.5)]


def test_disabled_writer_writes_nothing(tmp_path):
    with lu.MetricWriter(tmp_path / "w", enabled=False) as w:   # a non-primary process
        w.truncate_after(0)
        w.write_scalars(1, {"loss": 1.0})
    assert not (tmp_path / "w").exists()


def test_no_tensorflow_needed(tmp_path):
    code = ("import sys\n"
            "import unet_jax.logging_utils as lu\n"
            "assert 'tensorflow' not in sys.modules and 'tensorboardX' not in sys.modules\n"
            "with lu.MetricWriter(sys.argv[1]) as w:\n"
            "    w.write_scalars(1, {'loss': 1.0})\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorboard'))\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1


def test_jsonl_truncate_and_torn_line(tmp_path):
    with lu.MetricWriter(tmp_path, tensorboard=False) as w:
        for s in (5, 10, 15):
            w.write_scalars(s, {"loss": s})
        w.truncate_after(10)
        w.write_scalars(15, {"loss": 1.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "spl')                          # a writer killed mid-line
    assert [(r["step"], r["loss"]) for r in lu.read_jsonl(tmp_path / "metrics.jsonl")] == [(5, 5), (10, 10),
                                                                                          (15, 1.5)]
    png = lu.plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="step"):
        lu.MetricWriter(tmp_path / "x").write_scalars(1.5, {"loss": 1.0})
