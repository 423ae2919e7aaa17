"""DeepCluster training on a CUDA GPU: the same main() as train.py, on device "cuda"."""
if __name__ == "__main__":
    import cfg
    cfg.answer_help("train")  # help works without CUDA and before torch loads

from engine import require_cuda
from train import main

if __name__ == "__main__":
    main(require_cuda("train.py"))
