"""Prediction on a CUDA GPU: the same main() as pred.py, on device "cuda"."""
from pred import main
from train import require_cuda

if __name__ == "__main__":
    main(require_cuda("pred.py"))
