#!/usr/bin/env bash
# The own-data recipe grid (benchmarks/recipe_grid.py) on the device machine, many runs at once on its GPU.
#
#   bash benchmarks/gpu_recipe.sh [OUTDIR]     # from the repository root; OUTDIR defaults to $OUT
#
# Needs what benchmarks/gpu_prepare.sh carries: .whl/ (the packages the machine lacks), .gpu_data/isbi2012/ and
# .gpu_data/nuclei.npz (../shared/data/nuclei_bitdepth packed: the device gets no ../shared). Environment:
# STEPS (default 1000), PARALLEL (default 12), BUDGET seconds for the grid (default 270), VARIANTS, TASKS.
# OUTDIR gets recipe_grid.jsonl (one JSON line per run, written as each ends) and recipe_grid.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-runs/gpu_recipe}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/unet_jax_gpu_recipe.XXXXXX")
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TQDM_DISABLE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -d .whl ]]; then
  python3 benchmarks/gpu_run.py install-wheels .whl "$WORK/site" >"$OUTDIR/recipe_grid.log" 2>&1
  export PYTHONPATH="$WORK/site:$PYTHONPATH"
fi
python3 - "$WORK/shared" >>"$OUTDIR/recipe_grid.log" 2>&1 <<'PY'
import os, sys
from pathlib import Path
import numpy as np, tifffile
shared = Path(sys.argv[1])
for key, arr in np.load(".gpu_data/nuclei.npz").items():
    path = shared / "nuclei_bitdepth" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr)
os.symlink(Path(".gpu_data/isbi2012").resolve(), shared / "isbi2012")
print("unpacked", shared)
PY
nvidia-smi --query-gpu=name,memory.total --format=csv >>"$OUTDIR/recipe_grid.log" 2>&1
timeout -k 10 "${BUDGET:-270}" python3 benchmarks/recipe_grid.py --shared "$WORK/shared" --workdir "$WORK/grid" \
  --steps "${STEPS:-1000}" --parallel "${PARALLEL:-12}" ${TASKS:+--tasks $TASKS} ${VARIANTS:+--variants $VARIANTS} \
  --out "$OUTDIR/recipe_grid.jsonl" 2>>"$OUTDIR/recipe_grid.log" | tee -a "$OUTDIR/recipe_grid.log"
echo "exit $?" >>"$OUTDIR/recipe_grid.log"
