#!/usr/bin/env bash
# Fashion-MNIST end to end over several seeds: the results tables of docs/results.md.
#
#   bash tools/fashion_mnist_experiment.sh                  # the recipe (configs/fashion_mnist.json), 20,000 training images, 3 seeds
#   bash tools/fashion_mnist_experiment.sh --seeds 5        # more seeds (31, 32, ...)
#   bash tools/fashion_mnist_experiment.sh --data full      # all 60,000 training images, as many image passes as the recipe (4 epochs)
#   bash tools/fashion_mnist_experiment.sh --data sample    # the defaults on the shipped sample (2,000 training, 500 test images)
#   bash tools/fashion_mnist_experiment.sh --quick          # a short check of the same pipeline (5,000 images, 2 epochs, 1 seed)
#   bash tools/fashion_mnist_experiment.sh --data sample --train_per_class 200
#                                      # the defaults on the sample's 2,000 training images, scored on all 10,000 test images
#   bash tools/fashion_mnist_experiment.sh --config configs/reference.json --data sample   # another config
#   bash tools/fashion_mnist_experiment.sh --data sample --eval val --seeds 2 --name lr0.003 -- --lr 0.003
#                                      # an ablation: the flags after -- go to train.py; scored on a val split
#
# --eval val scores on further images of the training file instead of the test images (a tree whose
# val/ folder is disjoint from its train/): settings are chosen there, never on the test images.
# Per seed S (exp/experiment_<name>/seed_S/): the random network (train.py --num_epoch 0) and the
# training, both with --seed S; for both networks pred.py's fixed protocol on the test (or val) images
# (fresh PCA-whitening to 16 dims, k-means with k = 10 and 5 starts: --pred_mode recluster --pred_k 10
# --pca_dim 16 --kmeans_nredo 5), for the trained run on the epoch that select_epoch chose (pred/) and
# on the last epoch (pred_last/); eval_linear.py --baseline true (linear probe, trained and random).
# Then raw-pixel k-means once, the curves of seed 31 (curves.png) and tools/seed_summary.py: mean +- std
# over the seeds, written to summary.md / .json. Re-running skips what is done and resumes a killed
# training. --train_per_class N trains on the first N images of each class instead of the mode's count
# (tree data/fashion_mnist_N, scored on all 10,000 test images, or with --eval val on the next N / 2
# of each class); the mode still picks the config and epochs. PYTHON picks the interpreter (default:
# python), IDX_DIR the folder of the IDX files (apt-get install dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
IDX_DIR=${IDX_DIR:-/usr/share/datasets/fashion-mnist}
FILE_PER_CLASS=6000   # images of each class in the Fashion-MNIST training file
usage() {
  echo "usage: bash tools/fashion_mnist_experiment.sh [--seeds N] [--data subset|full|sample] [--quick]" \
       "[--train_per_class N] [--config FILE] [--eval test|val] [--name NAME] [-- TRAIN.PY FLAGS]" >&2
  exit 2
}

SEEDS=3 MODE=subset CONFIG="" EVAL=test NAME="" FLAGS=() TRAIN_PER_CLASS=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --seeds) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || usage; SEEDS=$2; shift 2 ;;
    --data) [[ $# -ge 2 && $2 =~ ^(subset|full|sample)$ ]] || usage; MODE=$2; shift 2 ;;
    --quick) MODE=quick; SEEDS=1; shift ;;
    --train_per_class) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ && $2 -le FILE_PER_CLASS ]] || usage; TRAIN_PER_CLASS=$2; shift 2 ;;
    --config) [[ $# -ge 2 && -f $2 ]] || usage; CONFIG=$2; shift 2 ;;
    --eval) [[ $# -ge 2 && $2 =~ ^(test|val)$ ]] || usage; EVAL=$2; shift 2 ;;
    --name) [[ $# -ge 2 && $2 =~ ^[A-Za-z0-9._-]+$ ]] || usage; NAME=$2; shift 2 ;;
    --) shift; FLAGS=("$@"); break ;;
    *) usage ;;
  esac
done
say() { echo "[$(date +%H:%M:%S)] $*"; }

EXTRA=()
case $MODE in
  subset) CONFIG=${CONFIG:-configs/fashion_mnist.json}; DATA=data/fashion_mnist_2000; PER_CLASS=2000 ;;
  full) CONFIG=${CONFIG:-configs/fashion_mnist.json}; DATA=data/fashion_mnist_full; PER_CLASS=0
        EXTRA=(--num_epoch 4) ;;   # 4 x 60,000 images = the recipe's 12 x 20,000
  quick) CONFIG=${CONFIG:-configs/fashion_mnist.json}; DATA=data/fashion_mnist_500; PER_CLASS=500
         EXTRA=(--num_epoch 2) ;;
  sample) DATA=data/fashion_mnist_small; PER_CLASS=200 ;;  # shipped with the repository: the first 200 per class
esac
if [[ -n $TRAIN_PER_CLASS ]]; then
  [[ $MODE == full ]] && { echo "--train_per_class and --data full contradict each other" >&2; exit 2; }
  PER_CLASS=$TRAIN_PER_CLASS; DATA=data/fashion_mnist_$PER_CLASS
fi
TEST=$DATA/test
if [[ $EVAL == val ]]; then
  [[ $MODE == full ]] && { echo "--eval val needs training images left over: not with --data full" >&2; exit 2; }
  (( PER_CLASS * 3 / 2 <= FILE_PER_CLASS )) || { echo "--eval val needs N / 2 more images per class: --train_per_class <= $(( FILE_PER_CLASS * 2 / 3 ))" >&2; exit 2; }
  VAL_TREE=data/fashion_mnist_${PER_CLASS}_val   # the same training images and a val/ of the next ones
  TEST=$VAL_TREE/val
fi
if [[ -z $NAME ]]; then
  NAME=$MODE
  [[ -n $TRAIN_PER_CLASS ]] && NAME=${MODE}_$TRAIN_PER_CLASS
  [[ -n $CONFIG && $CONFIG != configs/fashion_mnist.json ]] && NAME=${NAME}_$(basename "$CONFIG" .json)
  [[ $EVAL == val ]] && NAME=${NAME}_val
fi
EXP=exp/experiment_$NAME
COMMON=(--dataset_path "$DATA/train" --test_path "$TEST" --verbose false "${EXTRA[@]}" "${FLAGS[@]}")
[[ -n $CONFIG ]] && COMMON=(--config "$CONFIG" "${COMMON[@]}")
PROTOCOL=(--test_path "$TEST" --pred_mode recluster --pred_k 10 --pca_dim 16 --kmeans_nredo 5 --verbose false)
mkdir -p "$EXP"

if [[ ! -d $DATA/train || ! -d $DATA/test ]]; then
  say "building $DATA from $IDX_DIR"
  $PY tools/make_fashion_mnist.py --idx_dir "$IDX_DIR" --out "$DATA" --train_per_class "$PER_CLASS" --test_per_class 0
fi
if [[ $EVAL == val && ! -d $TEST ]]; then
  say "building $VAL_TREE from $IDX_DIR"
  $PY tools/make_fashion_mnist.py --idx_dir "$IDX_DIR" --out "$VAL_TREE" --train_per_class "$PER_CLASS" \
    --val_per_class $((PER_CLASS / 2)) --test_per_class 1
fi
[[ -f $EXP/pixel_kmeans.json ]] || $PY tools/pixel_kmeans.py "$TEST" --k 10 --out "$EXP/pixel_kmeans.json"

for ((i = 0; i < SEEDS; i++)); do
  S=$((31 + i)) D=$EXP/seed_$((31 + i))
  say "seed $S: random network"
  if [[ ! -f $D/random/pred/metrics.json ]]; then
    $PY train.py "${COMMON[@]}" --seed $S --exp_dir "$D/random" --num_epoch 0 --resume false
    $PY pred.py --exp_dir "$D/random" "${PROTOCOL[@]}" --pred_dir "$D/random/pred"
  fi
  say "seed $S: training ($CONFIG${CONFIG:+, }$DATA/train)"
  if [[ ! -f $D/trained/train_seconds.txt ]]; then
    start=$(date +%s)
    $PY train.py "${COMMON[@]}" --seed $S --exp_dir "$D/trained"
    echo $(( $(date +%s) - start )) > "$D/trained/train_seconds.txt"
  fi
  say "seed $S: evaluation"
  [[ -f $D/trained/pred/metrics.json ]] || $PY pred.py --exp_dir "$D/trained" "${PROTOCOL[@]}" --pred_dir "$D/trained/pred"
  [[ -f $D/trained/pred_last/metrics.json ]] || $PY pred.py --exp_dir "$D/trained" "${PROTOCOL[@]}" \
    --ckpt_path "$D/trained/checkpoint.pth.tar" --pred_dir "$D/trained/pred_last"
  [[ -f $D/trained/linear_probe.json ]] || $PY eval_linear.py --exp_dir "$D/trained" --test_path "$TEST" --baseline true \
    --verbose false
done

$PY tools/plot_curves.py "$EXP/seed_31/trained" --out "$EXP/curves.png" --title "DeepCluster on Fashion-MNIST ($NAME, seed 31)"
say "raw-pixel k-means: $(tr -d " \n" < "$EXP/pixel_kmeans.json")"
$PY tools/seed_summary.py "$EXP"
