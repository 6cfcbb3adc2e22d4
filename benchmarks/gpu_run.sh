#!/usr/bin/env bash
# The prepared accelerator run (BENCHMARKS.md, "GPU"), within one time budget, from the repository root:
#
#   bash benchmarks/gpu_prepare.sh                 # once, on a machine with internet: .whl/ and .gpu_data/
#   bash benchmarks/gpu_run.sh [OPTIONS] [OUTDIR]  # on the GPU machine; OUTDIR defaults to $OUT, else runs/gpu_run
#
# Steps, each in its own process under `timeout` so that a slow one cannot starve the rest:
#   setup        install the carried wheels (.whl/) whose packages the machine lacks into a scratch folder
#   a train_step the paper network's train step (features 64, 572 tile), float32 and bfloat16, batch 1/4/8,
#                unet-jax against PyTorch eager and torch.compile: img/s, TFLOP/s, MFU
#   b inference  overlap-tile inference of a 4096x4096 image with and without 8-fold TTA: Mpx/s, peak memory
#   c isbi       the paper recipe (experiments/isbi2012.py) on ISBI 2012 (.gpu_data/isbi2012) until the budget
#                is nearly spent (train.time_limit), then `unet-jax evaluate --tta` on the held-out slices 25-29
#
# OUTDIR gets gpu_results.json (written after every measurement: a stopped step leaves what it measured),
# gpu_run.log, isbi_eval_metrics.csv, isbi_train_metrics.jsonl, isbi_eval_overlay.png and (with matplotlib)
# isbi_training_curves.png.
#
# Options:
#   --budget S           whole run, seconds (default 480)
#   --time-train-step S  limit of step a (default 150)     --time-inference S  limit of step b (default 60)
#   --eval-margin S      seconds kept after training for validation, checkpoint and evaluate (default 120)
#   --data DIR           ISBI 2012 stacks (default $UNET_JAX_ISBI_DIR, else .gpu_data/isbi2012)
#   --wheels DIR         carried wheels (default .whl)
#   --data-dir DIR       where TFDS prepares ISBI (default: the scratch folder; with --smoke the package's
#                        default cache, ~/.cache/unet_jax/tfds, so that a second smoke run reuses it)
#   --skip STEPS         comma-separated steps to leave out (train_step, inference, isbi)
#   --keep-work          keep the scratch folder (workdir of step c, prepared data) and print where it is
#   --smoke              tiny settings (features 4, depth 2, small tiles and images, 3 steps, one validation
#                        slice, no torch.compile): checks that the whole script runs, on a CPU in well under a
#                        minute (tests/test_gpu_run.py)
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0; BUDGET=""; T_A=""; T_B=""; EVAL_MARGIN=""; DATA=""; DATA_DIR=""; WHEELS=.whl; SKIP=""; KEEP=0; OUTDIR=""
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --budget) BUDGET=$2; shift ;;
    --time-train-step) T_A=$2; shift ;;
    --time-inference) T_B=$2; shift ;;
    --eval-margin) EVAL_MARGIN=$2; shift ;;
    --data) DATA=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    --data-dir) DATA_DIR=$2; shift ;;
    --skip) SKIP=$2; shift ;;
    --keep-work) KEEP=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_run.sh: unknown option $1" >&2; exit 2 ;;
    *) OUTDIR=$1 ;;
  esac
  shift
done

if ((SMOKE)); then
  BUDGET=${BUDGET:-240}; T_A=${T_A:-60}; T_B=${T_B:-40}; EVAL_MARGIN=${EVAL_MARGIN:-30}
  A_ARGS=(--features 4 --depth 2 --tile 188 --batches 1 --repeats 2 --warmup 1 --no-torch-compile --no-plain
          --min-case-s 1)
  B_ARGS=(--features 4 --depth 2 --tile 380 --size 512 --batch-size 4 --dtypes float32 --repeats 1)
  C_ARGS=(--set model.features=4 --set model.depth=2 --set train.tile_size=188 --set train.num_steps=3
          --set train.log_every=1 --set eval.tile_size=380 --set data.validation_slices=1 --min-train-s 5)
else
  BUDGET=${BUDGET:-480}; T_A=${T_A:-150}; T_B=${T_B:-60}; EVAL_MARGIN=${EVAL_MARGIN:-120}
  A_ARGS=(); B_ARGS=(); C_ARGS=()
fi
DATA=${DATA:-${UNET_JAX_ISBI_DIR:-.gpu_data/isbi2012}}
OUTDIR=${OUTDIR:-${OUT:-runs/gpu_run}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
RESULTS=$OUTDIR/gpu_results.json
PY=${PYTHON:-python3}
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/unet_jax_gpu_run.XXXXXX")
if [[ -z $DATA_DIR ]] && ((!SMOKE)); then DATA_DIR=$WORK/tfds; fi

export PYTHONUNBUFFERED=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-20}     # a progress line every 20 s in the log, not every 0.1 s
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $((START + BUDGET - $(date +%s))); }

# run_step NAME LIMIT COMMAND...: COMMAND under `timeout` with min(LIMIT, what is left of the budget) seconds
run_step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  if [[ ",$SKIP," == *",$name,"* ]]; then
    echo "== $name: skipped (--skip)"
    "$PY" benchmarks/gpu_run.py status --results "$RESULTS" --step "$name" --status skipped --rc 0 --limit 0
    return
  fi
  if ((limit > $(left))); then limit=$(left); fi
  if ((limit < 5)); then
    echo "== $name: skipped, ${limit} s of the budget left"
    "$PY" benchmarks/gpu_run.py status --results "$RESULTS" --step "$name" --status skipped --rc 0 --limit "$limit"
    return
  fi
  echo "== $name: up to ${limit} s ($(date -u +%H:%M:%S), $(left) s of the budget left)"
  t0=$(date +%s)
  STEP_DEADLINE=$((t0 + limit))
  timeout -k 10 "$limit" "$@" --deadline "$((STEP_DEADLINE - 3))"
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s"
  "$PY" benchmarks/gpu_run.py status --results "$RESULTS" --step "$name" --rc "$rc" \
    --seconds "$(($(date +%s) - t0))" --limit "$limit"
}

main() {
  echo "== gpu_run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ): budget ${BUDGET} s, smoke=${SMOKE}, out ${OUTDIR}," \
    "scratch ${WORK}"
  "$PY" benchmarks/gpu_run.py init --results "$RESULTS" --budget "$BUDGET" $( ((SMOKE)) && echo --smoke) \
    --settings "train_step=${T_A}s inference=${T_B}s eval_margin=${EVAL_MARGIN}s data=${DATA} skip=${SKIP}"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 | head -5
  fi
  "$PY" -c 'import sys; print("python", sys.version.split()[0])'

  # setup: the wheels carried in $WHEELS, only those the machine lacks
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "== setup: carried wheels from $WHEELS"
    timeout -k 5 90 "$PY" benchmarks/gpu_run.py install-wheels "$WHEELS" "$WORK/site" \
      --check unet_jax.data.isbi2012 ml_collections tensorflow_datasets array_record
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
  fi

  run_step train_step "$T_A" "$PY" benchmarks/gpu_run.py train-step --results "$RESULTS" "${A_ARGS[@]}"
  run_step inference "$T_B" "$PY" benchmarks/gpu_run.py inference --results "$RESULTS" "${B_ARGS[@]}"
  # the rest of the budget, less 5 s for the summary
  run_step isbi $(($(left) - 5)) "$PY" benchmarks/gpu_run.py isbi --results "$RESULTS" --data "$DATA" \
    ${DATA_DIR:+--data-dir "$DATA_DIR"} --workdir "$WORK/isbi" --eval-margin "$EVAL_MARGIN" "${C_ARGS[@]}"

  "$PY" benchmarks/gpu_run.py summary --results "$RESULTS"
  echo "== gpu_run.sh done after $(($(date +%s) - START)) s; results in $OUTDIR:"
  ls -l "$OUTDIR"
  if ((KEEP)); then echo "== scratch kept: $WORK"; else rm -rf "$WORK"; fi
}

main 2>&1 | tee -a "$OUTDIR/gpu_run.log"
exit "${PIPESTATUS[0]}"
