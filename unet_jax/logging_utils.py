"""Training logs: a JSON-lines metrics file, TensorBoard scalar event files and a training-curve PNG.

All host-side (plain Python, numpy and matplotlib with the Agg backend); nothing here runs inside jit.

TensorBoard's event format is written directly (neither TensorFlow, tensorboard nor tensorboardX is needed): an
event file is a sequence of TFRecord records, each ``uint64 length | uint32 masked-crc32c(length) | data |
uint32 masked-crc32c(data)`` (little endian), whose data is a serialized ``tensorflow.Event`` protobuf. Only the
few protobuf fields a scalar needs are encoded here:

* ``Event``: ``wall_time`` (1, double), ``step`` (2, int64), ``file_version`` (3, string), ``summary`` (5);
* ``Summary``: repeated ``value`` (1);
* ``Summary.Value``: ``tag`` (1, string), ``simple_value`` (2, float).

``read_event_scalars`` reads such files back (used by the tests, and handy without TensorBoard installed).
"""
from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

__all__ = ["MetricWriter", "read_jsonl", "read_event_scalars", "plot_training_curves", "crc32c"]


# ----------------------------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), as TFRecord framing needs it
# ----------------------------------------------------------------------------------------------------------------

def _make_crc32c_table():
    poly = 0x82F63B78  # reversed Castagnoli polynomial
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, an unsigned 32-bit int (host-side); ``crc32c(b"123456789") == 0xE3069283``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data must be bytes, got {type(data).__name__}")
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------------------------
# Minimal protobuf encoding / decoding
# ----------------------------------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 -> two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _scalar_event(step: int, wall_time: float, scalars: Mapping[str, float]) -> bytes:
    values = b"".join(
        _field_bytes(1, _field_bytes(1, tag.encode("utf-8")) + _varint((2 << 3) | 5) + struct.pack("<f", value))
        for tag, value in scalars.items())
    return (_varint((1 << 3) | 1) + struct.pack("<d", wall_time) + _varint((2 << 3) | 0) + _varint(int(step))
            + _field_bytes(5, values))


def _version_event(wall_time: float) -> bytes:
    return _varint((1 << 3) | 1) + struct.pack("<d", wall_time) + _field_bytes(3, b"brain.Event:2")


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


def _parse_fields(buf: bytes):
    """Yield (field number, wire type, value) of a protobuf message; value is int, float-bytes or bytes."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _read_varint(buf: bytes, i: int):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def read_event_scalars(path) -> List[dict]:
    """Read the scalar summaries of a TensorBoard event file (host-side).

    Parameters
    ----------
    path : str or Path
        An ``events.out.tfevents.*`` file.

    Returns
    -------
    list of ``{'step': int, 'wall_time': float, 'tag': str, 'value': float}``, in file order.

    Raises
    ------
    ValueError
        If a record's length or data checksum does not match (a corrupt or truncated file).
    """
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        if i + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {i}")
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[i + 8:i + 12])
        if crc != _masked_crc(header):
            raise ValueError(f"{path}: bad length checksum at byte {i}")
        payload = data[i + 12:i + 12 + n]
        (crc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        if len(payload) != n or crc != _masked_crc(payload):
            raise ValueError(f"{path}: bad data checksum at byte {i}")
        i += 16 + n
        step, wall, summary = 0, 0.0, None
        for number, wire, value in _parse_fields(payload):
            if number == 1 and wire == 1:
                (wall,) = struct.unpack("<d", value)
            elif number == 2 and wire == 0:
                step = value - (1 << 64) if value >= 1 << 63 else value
            elif number == 5 and wire == 2:
                summary = value
        if summary is None:
            continue
        for number, _, value in _parse_fields(summary):
            if number != 1:
                continue
            tag, val = None, None
            for n2, w2, v2 in _parse_fields(value):
                if n2 == 1:
                    tag = v2.decode("utf-8")
                elif n2 == 2 and w2 == 5:
                    (val,) = struct.unpack("<f", v2)
            if tag is not None and val is not None:
                out.append({"step": step, "wall_time": wall, "tag": tag, "value": val})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------------------------

def _to_float(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"scalar {name!r} must be a number, got {value!r}") from None


class MetricWriter:
    """Write scalar metrics to ``workdir/metrics.jsonl`` and TensorBoard event files in ``workdir/tensorboard``.

    Host-side. Each ``write_scalars(step, scalars, split)`` call appends one JSON line
    ``{"step": step, "split": split, "time": unix_time, name: value, ...}`` (flushed at once, so a killed run
    loses nothing already written) and one TensorBoard event whose tags are ``split/name``.

    Parameters
    ----------
    workdir : str or Path
        Directory for the logs (created if missing).
    enabled : bool
        False makes every method a no-op (non-primary processes of a multi-host run).
    tensorboard : bool
        Also write TensorBoard event files.
    """

    def __init__(self, workdir, enabled: bool = True, tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.enabled = bool(enabled)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self.tb_dir = self.workdir / "tensorboard"
        self._jsonl = None
        self._events = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        if tensorboard:
            self.tb_dir.mkdir(parents=True, exist_ok=True)
            now = time.time()
            name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
            self._events = open(self.tb_dir / name, "ab")
            self._events.write(_record(_version_event(now)))
            self._events.flush()

    def truncate_after(self, step: int) -> None:
        """Drop JSONL records with ``step > step`` (a resumed run rewrites the steps after its checkpoint)."""
        if not self.enabled:
            return
        self._jsonl.close()
        kept = [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= step]
        tmp = self.jsonl_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.jsonl_path)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, float], split: str = "train") -> None:
        """Append ``scalars`` (name -> number) for ``step`` under ``split`` ('train', 'validation', ...)."""
        if not self.enabled:
            return
        if isinstance(step, bool) or int(step) != step:
            raise ValueError(f"step must be an integer, got {step!r}")
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        values = {str(k): _to_float(k, v) for k, v in scalars.items()}
        now = time.time()
        record = {"step": int(step), "split": split, "time": now}
        # JSON has no NaN/Inf; write them as strings so the file stays valid JSON.
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._events is not None:
            self._events.write(_record(_scalar_event(int(step), now, {f"{split}/{k}": v for k, v in values.items()})))
            self._events.flush()

    def close(self) -> None:
        """Flush and close the files."""
        for f in (self._jsonl, self._events):
            if f is not None:
                f.close()
        self._jsonl = self._events = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path) -> List[dict]:
    """Read a metrics JSONL file (host-side); a torn last line (a killed writer) is skipped. Missing file -> []."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ----------------------------------------------------------------------------------------------------------------
# Curves
# ----------------------------------------------------------------------------------------------------------------

def _series(records: Iterable[dict], split: str, name: str):
    pts = {}
    for r in records:
        if r.get("split") == split and isinstance(r.get(name), (int, float)):
            pts[r["step"]] = float(r[name])   # a resumed run's rewrite of a step wins
    steps = sorted(pts)
    return steps, [pts[s] for s in steps]


def plot_training_curves(jsonl_path, png_path, metrics: Optional[Dict[str, List[str]]] = None) -> Path:
    """Plot the curves of a metrics JSONL file into a PNG (host-side, matplotlib Agg backend).

    Parameters
    ----------
    jsonl_path : str or Path
        A file written by ``MetricWriter``.
    png_path : str or Path
        Output image.
    metrics : dict or None
        Panel title -> list of ``'split/name'`` series. Default: a 'loss' panel (train and validation loss) and an
        'error' panel (train and validation pixel error, validation Rand error when logged).

    Returns
    -------
    Path of the written PNG.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if metrics is None:
        metrics = {"loss": ["train/loss", "validation/loss"],
                   "error": ["train/pixel_mismatch", "validation/pixel_mismatch", "validation/rand_error"]}
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"metrics must be a non-empty mapping of panel -> series, got {metrics!r}")
    records = read_jsonl(jsonl_path)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], metrics.items()):
        for s in series:
            split, _, name = s.partition("/")
            steps, values = _series(records, split, name)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=s)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
