"""From a folder of one's own images to predictions, with pred.py and eval_linear.py taking the
run's settings from its checkpoint."""
import csv

import numpy as np
import pytest
import torch

import eval_linear
import pred
import train
from conftest import FAST, make_blob_tree


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    """A run trained with settings that differ from the defaults (input size, k, data, pca_dim)."""
    base = tmp_path_factory.mktemp("own")
    photos = make_blob_tree(base / "photos", classes=3, per_class=6, size=40)
    exp = base / "exp"
    train.main("cpu", ["--dataset_path", photos, "--exp_dir", str(exp), *FAST, "--input_size", "64",
                       "--num_classes", "4", "--num_epoch", "1"])
    return photos, exp


@pytest.mark.slow
def test_pred_needs_only_the_exp_dir(photo_run):
    photos, exp = photo_run
    result = pred.main("cpu", ["--exp_dir", str(exp), "--verbose", "false"])
    # the run set no test_path: pred.py shows where the run's own images landed, inside exp_dir
    assert result["n_images"] == 18 and result["k"] == 4 and result["checkpoint_epoch"] == 1
    rows = list(csv.DictReader(open(exp / "pred" / "predictions.csv")))
    assert len(rows) == 18 and all(r["path"].startswith(photos) for r in rows)
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert [int(r["cluster"]) for r in rows] == ckpt["assignment"].tolist()  # assign on the training images


def test_images_alias_pred_dir_default_and_feature_export(photo_run, tmp_path):
    photos, exp = photo_run
    other = make_blob_tree(tmp_path / "new", classes=2, per_class=3, size=50, seed=3)
    out = tmp_path / "p"
    result = pred.main("cpu", ["--exp_dir", str(exp), "--images", other, "--pred_dir", str(out),
                               "--save_features", "true", "--pred_mode", "recluster", "--pred_k", "2"])
    assert result["n_images"] == 6
    features, embeddings = np.load(out / "features.npy"), np.load(out / "embeddings.npy")
    assert features.shape == (6, 4096) and features.dtype == np.float16
    assert embeddings.shape[0] == 6 and embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-4)
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 6


def test_a_conflicting_model_flag_names_the_checkpoint_value(photo_run, tmp_path):
    _, exp = photo_run
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", ["--exp_dir", str(exp), "--input_size", "32", "--pred_dir", str(tmp_path / "p")])
    msg = str(e.value.code)
    assert "input_size=64" in msg and "input_size=32" in msg and "--resume" not in msg and "\n" not in msg


def test_eval_linear_takes_the_run_settings(photo_run):
    photos, exp = photo_run
    result = eval_linear.main("cpu", ["--exp_dir", str(exp), "--test_path", photos, "--probe_epochs", "2",
                                      "--verbose", "false"])
    # the test photos are the run's own training photos: the probe holds out val_split (0.1) of them to test on
    assert result["n_train"] == 15 and result["n_test"] == 3 and result["n_test_trained_on"] == 3
    assert result["checkpoint_epoch"] == 1
