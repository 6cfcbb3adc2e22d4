"""Run a benchmark command and keep what it printed as a result file: results/NAME.json (the command, date,
machine, load average and the JSON objects it printed) and results/NAME.md (the same figures, flattened and
rounded to 4 significant digits: what BENCHMARKS.md quotes).

    python scripts/record.py augment_cpu -- python benchmarks/augment.py --repeats 30
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "scikit-image", "torch", "elasticdeform")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **versions}


def json_objects(text: str) -> list:
    """Every line of ``text`` that is a JSON object (benchmarks print one per measurement or one at the end)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if not out:
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            pass
    return out


def flatten(obj, prefix: str = "") -> list:
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in flatten(v, f"{prefix}{k}.")]
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return [kv for i, v in enumerate(obj) for kv in flatten(v, f"{prefix}{i}.")]
    value = f"{obj:.4g}" if isinstance(obj, float) else json.dumps(obj)
    return [(prefix.rstrip("."), value)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage="%(prog)s NAME -- COMMAND ...")
    ap.add_argument("name", help="results/NAME.json and results/NAME.md")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    load0, start = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode:
        print(f"error: the command exited with {proc.returncode}; nothing written", file=sys.stderr)
        return proc.returncode
    objects = json_objects(proc.stdout)
    if not objects:
        print("error: the command printed no JSON; nothing written", file=sys.stderr)
        return 1
    record = {"command": shlex.join(command), "started": start, "machine": machine(),
              "load_average_before": load0, "load_average_after": os.getloadavg(), "output": objects}
    out = ROOT / "results" / args.name
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"`{record['command']}`, started {start}; machine: {record['machine']}; load average "
             f"{load0[0]:.1f} before, {record['load_average_after'][0]:.1f} after. Raw: `results/{args.name}.json`.",
             "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for obj in objects for k, v in flatten(obj)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
