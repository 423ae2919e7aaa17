import os
import runpy

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_cuda_without_cuda_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(ROOT, "train_cuda.py"), run_name="__main__")
    assert str(e.value.code) == "error: CUDA is not available; use train.py to train on the CPU"


def test_help_lists_every_key(capsys):
    import cfg
    import train
    with pytest.raises(SystemExit) as e:
        train.main("cpu", ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{key}" in out for key in cfg.cfg)
