#!/usr/bin/env bash
# GPU check: on a CUDA machine (aimed at about 5 minutes): the ImageNet-scale benchmark (bench/imagenet.py: 12,800
# synthetic photos, two epochs of train_cuda.py per phase against the network alone, the clustering of
# 1,281,167 x 4096 to k = 10,000 on the GPU, the projected ImageNet epoch, then the input paths side by side on
# 6,400 of the photos: JPEGs decoded by CPU workers or on the GPU with nvJPEG, decode alone, feature pass and
# training pass, compile off and on), then 2 epochs and a prediction on the shipped sample with the CUDA entry
# points. GPU_CHECK_ALL=1 adds the sharded clustering step at ImageNet's size (bench/sharded.py) and VGG16-BN
# throughput at 224 px with amp off / bf16 / fp16 (tools/gpu_throughput.py): a few minutes more.
#
#   bash tools/gpu_check.sh            # from the repository root
#   bash tools/gpu_check.sh --help
#   GPU_CHECK_N=25600 bash tools/gpu_check.sh   # photos of the benchmark (default 12800)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${GPU_CHECK_DIR:-/tmp/deepcluster_gpu_check}
case "${1:-}" in
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; echo "output folder: \$GPU_CHECK_DIR (default $OUT)"; exit 0 ;;
  "") ;;
  *) echo "gpu_check: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
# What is importable is checked first: an offline GPU machine cannot pip install, and a package that is missing
# is named with how to provide it, before any work.
missing=$($PY - <<'PYEOF'
import importlib.util
names = {"torch": "torch", "torchvision": "torchvision", "faiss": "faiss-cpu", "sklearn": "scikit-learn",
         "scipy": "scipy", "tqdm": "tqdm", "PIL": "pillow", "matplotlib": "matplotlib", "numpy": "numpy"}
print(" ".join(pip for module, pip in names.items() if importlib.util.find_spec(module) is None))
PYEOF
) || { echo "gpu_check: '$PY' does not run (set PYTHON to a python3 with torch)" >&2; exit 1; }
if [ -n "$missing" ]; then
  echo "gpu_check: missing packages: $missing; with a network: $PY -m pip install -r requirements.txt; offline: on a" \
       "machine with one, pip download --no-deps --only-binary=:all: --python-version $($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" \
       "-d wheels <package>==<version of requirements.txt>, copy wheels/ here, then" \
       "$PY -m pip install --no-index --no-deps --target /tmp/site wheels/*.whl && export PYTHONPATH=/tmp/site" >&2
  exit 1
fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: CUDA is not available on this machine; nothing to check (train.py and pred.py run on the CPU)" >&2
  exit 3
fi
set -e
rm -rf "$OUT" && mkdir -p "$OUT"
$PY -c "import torch; print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
$PY bench/imagenet.py --n "${GPU_CHECK_N:-12800}" --out "$OUT/results_imagenet.json"
start=$(date +%s)
$PY train_cuda.py --exp_dir "$OUT/exp" --num_epoch 2 --verbose false
grep -h " input: " "$OUT/exp/train.log"
$PY pred_cuda.py --exp_dir "$OUT/exp" --pred_dir "$OUT/pred" --pred_mode recluster --verbose false
echo "train_cuda.py 2 epochs + pred_cuda.py: $(( $(date +%s) - start )) s"
if [ "${GPU_CHECK_ALL:-0}" = 1 ]; then
  $PY bench/sharded.py --dtypes bfloat16,float32 --out "$OUT/results_sharded_gpu.json"
  $PY tools/gpu_throughput.py
fi
