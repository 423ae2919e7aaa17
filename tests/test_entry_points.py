import os
import runpy

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script, cpu_script", [("train_cuda.py", "train.py"), ("pred_cuda.py", "pred.py")])
def test_cuda_scripts_without_cuda_say_so_in_one_line(monkeypatch, script, cpu_script):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    assert str(e.value.code) == f"error: CUDA is not available; use {cpu_script} to run on the CPU"


def test_help_lists_every_key(capsys):
    import cfg
    import train
    with pytest.raises(SystemExit) as e:
        train.main("cpu", ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{key}" in out for key in cfg.cfg)
