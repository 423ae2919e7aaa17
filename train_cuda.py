"""DeepCluster training on a CUDA GPU: the same main() as train.py, on device "cuda"."""
import sys

import torch

from train import main

if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("error: CUDA is not available; use train.py to train on the CPU")
    main("cuda")
