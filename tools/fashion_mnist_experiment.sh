#!/usr/bin/env bash
# Fashion-MNIST end to end with the recipe in configs/fashion_mnist.json: the results table of docs/results.md.
#
#   bash tools/fashion_mnist_experiment.sh            # the full experiment (see docs/results.md for its duration)
#   bash tools/fashion_mnist_experiment.sh --quick    # a short check of the same pipeline (5,000 images, 2 epochs)
#
# Steps: build the image tree from the Debian IDX files (apt-get install dataset-fashion-mnist),
# raw-pixel k-means on the 10k test images, the random network, the recipe's training, then for
# both networks pred.py --pred_mode recluster --pred_k 10 on the 10k test images and eval_linear.py
# (linear probe on the training images' features), per-epoch curves, and one results line.
# Everything goes to exp/fashion_mnist[_quick]/; re-running resumes the training where it stopped.
# PYTHON picks the interpreter (default: python), IDX_DIR the folder of the IDX files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
IDX_DIR=${IDX_DIR:-/usr/share/datasets/fashion-mnist}
CONFIG=configs/fashion_mnist.json

MODE=full
if [[ $# -gt 0 ]]; then
  if [[ $1 == --quick && $# -eq 1 ]]; then MODE=quick; else
    echo "usage: bash tools/fashion_mnist_experiment.sh [--quick]" >&2; exit 2; fi
fi
# the config's dataset_path names the tree: data/fashion_mnist_<N>/train (N per class) or .._full/train (all)
if [[ $MODE == full ]]; then
  DATA=$($PY -c "import json; print(json.load(open('$CONFIG'))['dataset_path'].removesuffix('/train'))")
  EXP=exp/fashion_mnist
  EXTRA=()
else
  DATA=data/fashion_mnist_500   # 5,000 training images
  EXP=exp/fashion_mnist_quick
  EXTRA=(--num_epoch 2)
fi
PER_CLASS=${DATA##*_}
[[ $PER_CLASS == full ]] && PER_CLASS=0
COMMON=(--config "$CONFIG" --dataset_path "$DATA/train" --test_path "$DATA/test" "${EXTRA[@]}")
mkdir -p "$EXP"
say() { echo "[$(date +%H:%M:%S)] $*"; }

# 1. the tree: PER_CLASS training images per class, all 10,000 test images
if [[ ! -d $DATA/train || ! -d $DATA/test ]]; then
  say "building $DATA from $IDX_DIR"
  $PY tools/make_fashion_mnist.py --idx_dir "$IDX_DIR" --out "$DATA" --train_per_class "$PER_CLASS" --test_per_class 0
fi

# 2. raw pixels
say "raw-pixel k-means on $DATA/test"
$PY tools/pixel_kmeans.py "$DATA/test" --k 10 --out "$EXP/pixel_kmeans.json"

# 3. the random network: a checkpoint of epoch 0 (no training), same settings
say "random network"
$PY train.py "${COMMON[@]}" --exp_dir "$EXP/random" --num_epoch 0 --resume false --verbose false
$PY pred.py "${COMMON[@]}" --exp_dir "$EXP/random" --pred_mode recluster --pred_k 10 --pred_dir "$EXP/random/pred" \
  --verbose false

# 4. the recipe (resumes when the checkpoint exists)
say "training: $CONFIG on $DATA/train"
start=$(date +%s)
$PY train.py "${COMMON[@]}" --exp_dir "$EXP/recipe"
echo $(( $(date +%s) - start )) > "$EXP/recipe/train_seconds.txt"
say "training took $(cat "$EXP/recipe/train_seconds.txt") s in this call"

# 5. evaluation on the 10k test images, and the linear probe (trained and random side by side)
$PY pred.py "${COMMON[@]}" --exp_dir "$EXP/recipe" --pred_mode recluster --pred_k 10 --pred_dir "$EXP/recipe/pred" \
  --verbose false
$PY eval_linear.py "${COMMON[@]}" --exp_dir "$EXP/recipe" --baseline true --verbose false

# 6. curves and the results line
$PY tools/plot_curves.py "$EXP/recipe" --out "$EXP/curves.png" --title "DeepCluster recipe on Fashion-MNIST ($MODE)"
$PY - "$EXP" "$MODE" <<'EOF'
import json, sys
exp, mode = sys.argv[1], sys.argv[2]
load = lambda p: json.load(open(f"{exp}/{p}"))
px, rnd, rec, probe = (load("pixel_kmeans.json"), load("random/pred/metrics.json"), load("recipe/pred/metrics.json"),
                       load("recipe/linear_probe.json"))
row = lambda r: f"acc {r['acc']:.3f} nmi {r['nmi']:.3f} ari {r['ari']:.3f}"
secs = int(open(f"{exp}/recipe/train_seconds.txt").read())
print(f"RESULT fashion-mnist {mode}, {rec['n_images']} test images, k = 10 | pixels {row(px)} | "
      f"random {row(rnd)} probe {probe['random']['test_acc']:.3f} | "
      f"recipe (epoch {rec['checkpoint_epoch']}, {secs} s) {row(rec)} probe {probe['trained']['test_acc']:.3f}")
EOF
