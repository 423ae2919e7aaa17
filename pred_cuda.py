"""Prediction on a CUDA GPU: the same main() as pred.py, on device "cuda"."""
if __name__ == "__main__":
    import cfg
    cfg.answer_help("pred")  # help works without CUDA and before torch loads

from engine import require_cuda
from pred import main

if __name__ == "__main__":
    main(require_cuda("pred.py"))
