"""select_epoch: the epoch pred.py and eval_linear.py use, chosen without labels."""
import json
import os
import shutil

import pytest
import torch

import cfg
import checkpoint
import pred
import train
from conftest import train_args


def scores(exp, rule):
    """The rule's score of the network after each epoch 1..N: metrics row e holds the clustering of the
    weights after e epochs, the checkpoint the clustering of the last weights."""
    with open(os.path.join(exp, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    last = torch.load(os.path.join(exp, "checkpoint.pth.tar"), weights_only=True)
    return {r["epoch"]: r[rule] for r in rows[1:]} | {len(rows): last["clustering_metrics"][rule]}, last


@pytest.mark.slow
@pytest.mark.parametrize("rule,pick", [("nmi_prev", max), ("kmeans_loss", min)])
def test_the_chosen_epoch_is_the_best_score_and_its_checkpoint_is_kept(blob_tree, tmp_path, rule, pick):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "3", "--select_epoch", rule))
    by_epoch, last = scores(exp, rule)
    best = pick(by_epoch.values())
    assert last["selected"]["rule"] == rule and last["selected"]["score"] == pytest.approx(best)
    assert last["selected"]["epoch"] == min(e for e, v in by_epoch.items() if v == best)  # ties: the earlier
    kept = torch.load(exp / "selected.pth.tar", weights_only=True)
    assert kept["epoch"] == last["selected"]["epoch"] == kept["selected"]["epoch"]  # saved when it was chosen


def test_the_chosen_checkpoint_is_kept_without_what_only_a_resume_reads(tmp_path):
    """selected.pth.tar links to the checkpoint while its epoch is the last; when a later epoch replaces the
    checkpoint it becomes a copy without the optimizer, schedule and RNG states (half the size: the momentum is
    a second copy of the weights), which pred.py and eval_linear.py never read."""
    path, selected = str(tmp_path / "checkpoint.pth.tar"), str(tmp_path / "selected.pth.tar")
    weights = {"w": torch.zeros(1000, 100)}
    momentum = {"state": {0: {"momentum_buffer": torch.zeros(1000, 100)}}}
    state = {"epoch": 3, "state_dict": weights, "optimizer": momentum, "scheduler": None,
             "rng": {"torch": torch.zeros(5000, dtype=torch.uint8)}, "assignment": torch.zeros(4)}
    checkpoint.save_checkpoint(path, state)
    checkpoint.keep_as_selected(path, selected)
    weights["w"] += 1  # the live network trains on: the copy is what was saved, not what is in memory now
    checkpoint.keep_selected_apart(path, selected)
    kept = torch.load(selected, weights_only=True)
    assert not os.path.samefile(path, selected) and os.path.getsize(selected) < 0.6 * os.path.getsize(path)
    assert set(kept) == {"epoch", "state_dict", "assignment"} and torch.equal(kept["state_dict"]["w"], torch.zeros(1000, 100))
    os.utime(selected, ns=(1, 1))
    checkpoint.keep_selected_apart(path, selected)  # no longer a link: left alone
    assert os.stat(selected).st_mtime_ns == 1


@pytest.mark.slow
def test_rule_last_keeps_nothing_and_a_new_run_drops_an_old_choice(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2", "--select_epoch", "nmi_prev"))
    assert (exp / "selected.pth.tar").exists()
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2", "--resume", "false"))  # the default: last
    assert not (exp / "selected.pth.tar").exists()
    assert torch.load(exp / "checkpoint.pth.tar", weights_only=True)["selected"] is None


def fake_choice(exp, chosen_epoch):
    """Make the run of exp look as if its rule had chosen an earlier epoch: its checkpoint, relabelled."""
    last = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    torch.save(dict(last, epoch=chosen_epoch), exp / "selected.pth.tar")
    torch.save(dict(last, selected={"rule": "nmi_prev", "epoch": chosen_epoch, "score": 0.5}),
               exp / "checkpoint.pth.tar")
    return last


@pytest.mark.slow
def test_pred_uses_the_chosen_epoch_unless_told_otherwise(trained, tmp_path, capsys):
    tree, exp0 = trained
    exp = tmp_path / "exp"
    shutil.copytree(exp0, exp)
    fake_choice(exp, 1)
    result = pred.main("cpu", ["--exp_dir", str(exp), "--test_path", str(tree), "--pred_dir", str(tmp_path / "p")])
    assert result["checkpoint_epoch"] == 1 and result["checkpoint"].endswith("selected.pth.tar")
    assert "using the network after epoch 1 of 2, chosen without labels by select_epoch nmi_prev" in capsys.readouterr().out
    last = str(exp / "checkpoint.pth.tar")
    result = pred.main("cpu", ["--exp_dir", str(exp), "--test_path", str(tree), "--ckpt_path", last,
                               "--pred_dir", str(tmp_path / "q")])
    assert result["checkpoint_epoch"] == 2


def test_a_chosen_checkpoint_that_does_not_match_falls_back_to_the_last(trained, tmp_path, capsys):
    tree, exp0 = trained
    exp = tmp_path / "exp"
    shutil.copytree(exp0, exp)
    fake_choice(exp, 1)
    ckpt = torch.load(exp / "selected.pth.tar", weights_only=True)
    torch.save(dict(ckpt, epoch=0), exp / "selected.pth.tar")  # e.g. left by another run
    c, ckpt = checkpoint.run_settings({**cfg.DEFAULTS, "exp_dir": str(exp)}, set(), "pred.py")
    assert int(ckpt["epoch"]) == 2 and c["ckpt_path"].endswith("checkpoint.pth.tar")
    assert "is not the checkpoint of epoch 1 that the run chose; using the last epoch (2)" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_between_checkpoint_and_link_is_mended_on_resume(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1", "--select_epoch", "nmi_prev"))
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["selected"]["epoch"] == 1  # the only trained epoch is chosen
    os.remove(exp / "selected.pth.tar")  # as if killed before the link
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2", "--select_epoch", "nmi_prev"))
    last = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    kept = torch.load(exp / "selected.pth.tar", weights_only=True)
    assert kept["epoch"] == last["selected"]["epoch"]


def chosen_apart(exp, epoch=1, score=0.9):
    """Make the run in exp look as if nmi_prev had chosen `epoch` (kept apart in selected.pth.tar)."""
    path = exp / "checkpoint.pth.tar"
    last = torch.load(path, weights_only=True)
    last["selected"] = {"rule": "nmi_prev", "epoch": epoch, "score": score}
    checkpoint.save_checkpoint(str(path), last)
    if (exp / "selected.pth.tar").exists():
        os.remove(exp / "selected.pth.tar")
    if epoch != last["epoch"]:
        checkpoint.save_checkpoint(str(exp / "selected.pth.tar"), {**last, "epoch": epoch})
    else:
        checkpoint.keep_as_selected(str(path), str(exp / "selected.pth.tar"))


@pytest.mark.slow
def test_a_rule_change_that_would_drop_the_kept_network_is_one_line_that_refuses(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2", "--select_epoch", "nmi_prev"))
    chosen_apart(exp, epoch=1)
    before = {name: (exp / name).read_bytes() for name in ("checkpoint.pth.tar", "selected.pth.tar")}
    with pytest.raises(SystemExit) as e:
        train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "3", "--select_epoch", "kmeans_loss"))
    line = str(e.value)
    assert "\n" not in line.strip() and "epoch 1, chosen by select_epoch nmi_prev (nmi_prev 0.9000)" in line
    assert "resume with --select_epoch nmi_prev" in line and "move selected.pth.tar out of the folder" in line
    assert {name: (exp / name).read_bytes() for name in before} == before  # nothing trained, nothing replaced
    os.rename(exp / "selected.pth.tar", tmp_path / "kept.pth.tar")  # the user keeps it elsewhere: the change runs
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "3", "--select_epoch", "kmeans_loss"))
    log = (exp / "train.log").read_text()
    assert "select_epoch changed from nmi_prev (it had chosen epoch 1, nmi_prev 0.9000) to kmeans_loss" in log
    assert "epoch 1, the old rule's choice, is no longer in the folder" in log
    assert torch.load(exp / "checkpoint.pth.tar", weights_only=True)["selected"]["rule"] == "kmeans_loss"


@pytest.mark.slow
def test_a_rule_change_rechooses_among_the_networks_still_there_and_says_which_it_could_not(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2", "--select_epoch", "nmi_prev"))
    chosen_apart(exp, epoch=2)  # the old rule's choice is the last checkpoint: nothing is lost by the change
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "4", "--select_epoch", "kmeans_loss"))
    log = (exp / "train.log").read_text()
    assert "to kmeans_loss: it starts from epoch 2 (kmeans_loss " in log
    assert "it cannot consider epoch 1 (its network is not kept)" in log
    by_epoch, last = scores(exp, "kmeans_loss")
    best = min(v for e, v in by_epoch.items() if e >= 2)
    assert last["selected"]["rule"] == "kmeans_loss" and last["selected"]["score"] == pytest.approx(best)
    kept = torch.load(exp / "selected.pth.tar", weights_only=True)
    assert kept["epoch"] == last["selected"]["epoch"]
