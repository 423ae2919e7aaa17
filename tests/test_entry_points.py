import os
import runpy
import subprocess
import sys

import pytest
import torch

import cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_SCRIPTS = ("train.py", "train_cuda.py", "pred.py", "pred_cuda.py", "eval_linear.py")


@pytest.mark.parametrize("script, cpu_script", [("train_cuda.py", "train.py"), ("pred_cuda.py", "pred.py")])
def test_cuda_scripts_without_cuda_say_so_in_one_line(monkeypatch, script, cpu_script):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", [script])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    assert str(e.value.code) == f"error: CUDA is not available; use {cpu_script} to run on the CPU"


def test_help_lists_every_key_train_reads(capsys):
    import train
    with pytest.raises(SystemExit) as e:
        train.main("cpu", ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{key} " in out for key in cfg.SCRIPT_KEYS["train"] if key in cfg.PAGE)
    assert "--pred_dir" not in out and "--probe_layer" not in out  # keys of other scripts stay out
    assert "--momentum " not in out and "--help all" in out  # the advanced keys only on request
    with pytest.raises(SystemExit) as e:
        train.main("cpu", ["--help", "all"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(f"--{key} " in out for key in cfg.SCRIPT_KEYS["train"])
    assert "--pred_dir" not in out and "advanced training:" in out


def test_every_key_is_read_by_some_script():
    read = set().union(*map(set, cfg.SCRIPT_KEYS.values()))
    assert read == set(cfg.DEFAULTS)
    assert "lr" not in cfg.SCRIPT_KEYS["pred"] and "pred_dir" not in cfg.SCRIPT_KEYS["eval_linear"]


def test_each_scripts_keys_come_from_the_group_headers_as_they_were_listed_by_hand():
    """The lists each script's --help and run_settings use, derived from cfg.py's group headers, are the
    lists that were kept by hand before (pred.py and eval_linear.py; train.py reads every other key), with the keys
    added since (decode_device)."""
    pred = {"amp", "arch", "batch_size", "cache_mb", "check_images", "check_workers", "ckpt_path", "clustering_device",
        "clustering_space", "copy_images", "dataset_path", "decode_device", "decode_side", "duplicate_threshold",
        "exp_dir", "input_size", "jpeg_decoder", "kmeans_niter", "kmeans_nredo", "labels", "map", "map_points",
        "num_classes", "pca_dim", "pca_method", "pred_dir", "pred_k", "pred_k_range", "pred_mode", "report",
        "save_features", "seed", "similar_k", "similar_to", "sobel", "test_path", "val_split", "verbose", "workers"}
    probe = {"arch", "baseline", "batch_size", "cache_mb", "check_images", "check_workers", "ckpt_path", "dataset_path",
        "decode_device", "decode_side", "exp_dir", "input_size", "jpeg_decoder", "labels", "probe_dims", "probe_epochs",
        "probe_layer", "probe_lr", "probe_weight_decay", "seed", "sobel", "test_path", "val_split", "verbose",
        "workers"}
    assert set(cfg.SCRIPT_KEYS["pred"]) == pred and set(cfg.SCRIPT_KEYS["eval_linear"]) == probe
    only_elsewhere = {"ckpt_path", "pred_dir", "pred_mode", "pred_k", "copy_images", "save_features", "report", "map",
                      "map_points", "pred_k_range", "duplicate_threshold", "similar_to", "similar_k", "probe_layer",
                      "probe_dims", "probe_epochs", "probe_lr", "probe_weight_decay", "baseline"}
    assert set(cfg.SCRIPT_KEYS["train"]) == set(cfg.DEFAULTS) - only_elsewhere


def test_help_is_grouped_and_fits_the_terminal():
    text = cfg.help_text("pred", width=72)
    headers = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headers == ["data:", "model:", "clustering:", "prediction:", "run:"]
    assert max(len(line) for line in text.splitlines()) <= 72
    text = cfg.help_text("pred", width=72, everything=True)
    headers = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headers == ["data:", "model:", "clustering:", "prediction:", "run:", "advanced data:",
                       "advanced clustering:", "advanced prediction:", "advanced system:"]
    assert max(len(line) for line in text.splitlines()) <= 72


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_help_answers_before_torch_loads_and_without_cuda(script):
    """--help of every entry script, run as a user would: exit 0, the script's own keys, and neither
    torch nor faiss imported (so it answers at once, and *_cuda.py answers on a machine without CUDA)."""
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print('LOADED', 'torch' in sys.modules, 'faiss' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe, script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python ") and "LOADED False False" in r.stdout
    name = script.replace("_cuda", "").removesuffix(".py")
    assert all(f"--{key} " in r.stdout for key in cfg.SCRIPT_KEYS[name] if key in cfg.PAGE)
