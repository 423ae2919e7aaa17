"""DeepCluster training on a CUDA GPU: the same main() as train.py, on device "cuda"."""
from train import main, require_cuda

if __name__ == "__main__":
    main(require_cuda("train.py"))
