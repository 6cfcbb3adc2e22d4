#!/usr/bin/env bash
# Prepare the device run of benchmarks/gpu_run.sh, here (with internet), from the repository root:
#
#   bash benchmarks/gpu_prepare.sh [--python-version 3.12] [--wheels .whl] [--data-src DIR] [--data .gpu_data/isbi2012]
#
# 1. downloads into .whl/ the wheels of what the package needs beyond what the GPU machine has (it has jax with CUDA,
#    jaxlib, flax, optax, orbax-checkpoint, scikit-image, tifffile, torch, numpy, scipy and their dependencies; not
#    tensorflow-datasets and what it imports on the way the package reads data, nor ml-collections); gpu_run.sh
#    installs only those whose distribution the machine lacks, into a scratch folder, so the machine's own packages
#    are never shadowed. A few packages the machine should already have (protobuf, etils, absl-py, ...) come along
#    as a fallback that gpu_run.sh uses only if the data modules fail to import without them. Versions are those
#    the package is tested with. pyarrow (huge) is left out: tensorflow-datasets imports it only for formats this
#    package does not use.
# 2. copies the ISBI 2012 stacks (default ../shared/data/isbi2012, or $UNET_JAX_ISBI_DIR) into .gpu_data/isbi2012.
#
# Both folders are git-ignored; carry them to the device run: carry [".whl", ".gpu_data"]. Prints the sizes: the
# carried paths and the tracked files together must stay under the device tool's 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

PYV=3.12; WHEELS=.whl; SRC=${UNET_JAX_ISBI_DIR:-../shared/data/isbi2012}; DATA=.gpu_data/isbi2012
while (($#)); do
  case "$1" in
    --python-version) PYV=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    --data-src) SRC=$2; shift ;;
    --data) DATA=$2; shift ;;
    *) echo "gpu_prepare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# What the data path imports and the GPU machine lacks (tensorflow-datasets' own requirements, less pyarrow and
# requests, which that path does not import), then the fallback set.
PACKAGES=(
  tensorflow-datasets==4.9.10 array-record==0.8.6 ml-collections==1.1.0 tensorflow-metadata==1.21.0
  googleapis-common-protos==1.76.0 dm-tree==0.1.10 attrs==26.1.0 wrapt==2.1.2 immutabledict==4.3.1 promise==2.3
  six==1.17.0 simple-parsing==0.1.9 docstring-parser==0.18.0 termcolor==3.3.0 toml==0.10.2 tqdm==4.70.1
  protobuf==7.36.2 etils==1.15.0 absl-py==2.5.1 importlib-resources==7.1.0 zipp==4.1.2
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$WHEELS"
for spec in "${PACKAGES[@]}"; do
  if ! python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version "$PYV" --implementation cp "${PLATFORMS[@]}" -d "$WHEELS" "$spec" 2>/dev/null; then
    # no wheel on the index (promise is an sdist): build one; only a pure-Python (py*-none-any) one will do
    python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" "$spec"
    name=${spec%%==*}; ver=${spec##*==}
    built=$(ls "$WHEELS" | grep -i "^${name//-/_}-${ver}-" || true)
    case "$built" in
      *-none-any.whl) ;;
      *) echo "gpu_prepare.sh: $spec has no wheel for Python $PYV and did not build as pure Python: $built" >&2
         exit 1 ;;
    esac
  fi
done
echo "wheels in $WHEELS:"
ls -1 "$WHEELS"

mkdir -p "$DATA"
for f in train-volume.tif train-labels.tif test-volume.tif; do
  if [[ ! -f $SRC/$f ]]; then echo "gpu_prepare.sh: $SRC/$f not found (--data-src DIR)" >&2; exit 1; fi
  install -m 644 "$SRC/$f" "$DATA/$f"
done

tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -sb "$WHEELS" | cut -f1)
data=$(du -sb "$(dirname "$DATA")" | cut -f1)
total=$((tracked + whl + data))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "sizes: tracked files $(mib "$tracked"), $WHEELS $(mib "$whl"), $(dirname "$DATA") $(mib "$data");" \
  "total $(mib "$total")"
if ((total > 60 * 1048576)); then
  echo "gpu_prepare.sh: WARNING: more than 60 MiB; the device run carries at most 64 MiB" >&2
fi
echo "device command: bash benchmarks/gpu_run.sh    (carry: [\"$WHEELS\", \"$(dirname "$DATA")\"])"
