import json
import os
import subprocess
import sys

import pytest

import cfg as cfgmod
from cfg import DEFAULTS as cfg, load_cfg, save_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_of(argv):
    with pytest.raises(SystemExit) as e:
        load_cfg(argv)
    return str(e.value.code)


def test_defaults_without_arguments():
    assert load_cfg([]) == cfg


def test_flags_are_typed_like_the_defaults():
    c = load_cfg(["--num_epoch", "3", "--lr", "0.1", "--sobel", "false", "--arch=alexnet", "--input_size=64"])
    assert c["num_epoch"] == 3 and isinstance(c["num_epoch"], int)
    assert c["lr"] == 0.1 and c["sobel"] is False and c["arch"] == "alexnet" and c["input_size"] == 64


def test_precedence_defaults_file_flags(tmp_path):
    path = tmp_path / "my.json"
    path.write_text(json.dumps({"num_epoch": 7, "lr": 1, "sobel": False}))
    # the flag wins over the file even when it comes first on the command line
    c = load_cfg(["--num_epoch", "3", "--config", str(path)])
    assert c["num_epoch"] == 3
    assert c["lr"] == 1.0 and isinstance(c["lr"], float)  # from the file, int accepted for a float
    assert c["sobel"] is False
    assert c["batch_size"] == cfg["batch_size"]  # untouched default


def test_unknown_key_names_the_closest_key():
    msg = error_of(["--num_epochs", "3"])
    assert "'num_epochs'" in msg and "did you mean 'num_epoch'" in msg


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"batchsize": 4}))
    msg = error_of(["--config", str(path)])
    assert "'batchsize'" in msg and "'batch_size'" in msg


@pytest.mark.parametrize("argv, key", [
    (["--num_epoch", "2.5"], "num_epoch"),
    (["--lr", "fast"], "lr"),
    (["--sobel", "maybe"], "sobel"),
    (["--arch", "resnet"], "arch"),
    (["--batch_size", "0"], "batch_size"),
    (["--arch", "alexnet", "--input_size", "32"], "input_size"),
    (["--num_epoch"], "num_epoch"),
])
def test_bad_flag_values_name_the_key(argv, key):
    assert key in error_of(argv)


@pytest.mark.parametrize("overrides, key", [({"lr": "fast"}, "lr"), ({"num_epoch": True}, "num_epoch"),
                                            ({"sobel": 1}, "sobel"), ({"num_epoch": 2.0}, "num_epoch")])
def test_bad_file_values_name_the_key(tmp_path, overrides, key):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(overrides))
    assert key in error_of(["--config", str(path)])


def test_config_file_errors(tmp_path):
    assert "does not exist" in error_of(["--config", str(tmp_path / "nope.json")])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in error_of(["--config", str(bad)])
    bad.write_text("[1, 2]")
    assert "JSON object" in error_of(["--config", str(bad)])


def test_config_file_in_another_encoding_is_one_line(tmp_path):
    latin = tmp_path / "latin1.json"
    latin.write_bytes('{"dataset_path": "donn\u00e9es"}'.encode("latin-1"))
    message = error_of(["--config", str(latin)])
    assert "not UTF-8" in message and "0xe9" in message and "\n" not in message
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"num_epoch": 3}).encode())
    assert load_cfg(["--config", str(bom)])["num_epoch"] == 3


def test_every_key_has_a_comment_in_help():
    for key in cfg:
        script = next(name for name, keys in cfgmod.SCRIPT_KEYS.items() if key in keys)
        lines = cfgmod.help_text(script, width=200, everything=True).splitlines()
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"--{key} "))
        entry = lines[at].split(None, 2)[2:] or [lines[at + 1]]  # a long default puts the comment below
        assert entry[0].strip() and not entry[0].strip().startswith("--"), f"{key} has no comment"


def test_save_cfg_writes_effective_config(tmp_path):
    c = load_cfg(["--num_epoch", "4"])
    path = save_cfg(c, tmp_path / "exp")
    assert json.loads(open(path).read()) == c


def test_command_line_error_is_one_line_without_traceback():
    r = subprocess.run([sys.executable, "train.py", "--num_epochs", "3"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "did you mean 'num_epoch'" in r.stderr


def test_readme_shows_the_settings_page_and_docs_every_key_with_its_default():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    settings = open(os.path.join(ROOT, "docs", "settings.md"), encoding="utf-8").read()
    for key, value in cfg.items():
        shown = json.dumps(value) if value == "" else str(value).lower() if isinstance(value, bool) else str(value)
        assert f"| `{key}` | `{shown}` |" in settings, f"docs/settings.md lacks {key} = {shown}"
        assert (f"| `{key}` | `{shown}` |" in readme) == (key in cfgmod.PAGE), f"README's settings page and {key}"


def test_the_settings_page_comes_first_grouped_and_short():
    page = cfgmod.PAGE
    assert 10 <= len(page) <= 20 and list(cfg)[:len(page)] == page  # the page opens the dict
    for key in ("dataset_path", "test_path", "exp_dir", "arch", "input_size", "num_classes", "num_epoch",
                "batch_size", "lr", "pred_mode"):  # what a first run needs
        assert key in page
    assert list(dict.fromkeys(cfgmod.group_of(k) for k in page)) == [
        "data", "model", "clustering", "training", "prediction", "run"]
    source = open(cfgmod.__file__, encoding="utf-8").read()
    for key in page:
        line = next(x for x in source.splitlines() if x.strip().startswith(f'"{key}":'))
        assert len(line) <= 120, f"{key}'s line on the settings page is {len(line)} characters"


def test_a_list_valued_key_takes_every_value_up_to_the_next_flag(tmp_path):
    c = load_cfg(["--similar_to", "a.jpg", "my photos/", "--pred_k", "auto", "--pred_k_range", "3", "9"], script="pred")
    assert c["similar_to"] == ["a.jpg", "my photos/"] and c["pred_k"] == "auto" and c["pred_k_range"] == [3, 9]
    assert load_cfg(["--similar_to=-odd.png", "b.png"], script="pred")["similar_to"] == ["-odd.png", "b.png"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"similar_to": ["x.png"], "pred_k_range": [4, 6], "pred_k": "auto"}))
    c = load_cfg(["--config", str(path)], script="pred")
    assert c["similar_to"] == ["x.png"] and c["pred_k_range"] == [4, 6] and c["pred_k"] == "auto"
    assert cfg["similar_to"] == [] and load_cfg([])["similar_to"] is not cfg["similar_to"]  # defaults stay untouched


@pytest.mark.parametrize("argv, words", [
    (["--similar_to"], "needs at least one value"),
    (["--pred_k", "many"], "takes an integer or auto"),
    (["--pred_k_range", "1", "9"], "2 <= low <= high"),
    (["--pred_k_range", "8", "3"], "2 <= low <= high"),
    (["--pred_k_range", "5"], "two integers"),
    (["--pred_k_range", "2", "x"], "takes integers"),
    (["--duplicate_threshold", "5"], "<= 4.0"),
])
def test_bad_list_and_word_values_are_one_line(argv, words):
    msg = error_of(argv)
    assert words in msg and "\n" not in msg


@pytest.mark.parametrize("overrides, key", [({"similar_to": "x.png"}, "similar_to"), ({"similar_to": [1]}, "similar_to"),
                                            ({"pred_k_range": [2, 3.5]}, "pred_k_range"), ({"pred_k": "AUTO"}, "pred_k")])
def test_bad_list_values_in_a_config_file_name_the_key(tmp_path, overrides, key):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(overrides))
    assert key in error_of(["--config", str(path)])
