"""report.py: pred.py's page (index.html, thumbs/) and the map; curves.py: train.py's curves.png and the TensorBoard switch."""
import csv
import json
import os
import sys
import urllib.parse
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

import curves
import pred
import report
import thumbnails
import train
from conftest import make_blob_tree, train_args
from tools import plot_curves


class Page(HTMLParser):
    """Every src/href, every element id, every card (id, title), every thumbnail's title, and the open tags left
    unclosed."""
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self, path):
        super().__init__(convert_charrefs=True)
        self.links, self.cards, self.titles, self.stack, self.card, self.ids = [], {}, [], [], None, set()
        with open(path, encoding="utf-8") as f:
            self.feed(f.read())
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        self.links += [attrs[a] for a in ("src", "href") if a in attrs]
        self.ids |= {attrs["id"]} if "id" in attrs else set()
        if tag == "section":
            self.card = attrs["id"]
            self.cards[self.card] = {"text": "", "thumbs": 0}
        if tag == "img" and self.card:
            self.cards[self.card]["thumbs"] += 1
            self.titles.append(attrs["title"])

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"
        if tag == "section":
            self.card = None

    def handle_data(self, data):
        if self.card:
            self.cards[self.card]["text"] += data


def resolve(folder, link):
    """The file a relative src/href of a page in folder leads to (percent-encoded bytes, as a browser reads them)."""
    assert "://" not in link and not link.startswith("/"), link
    return os.path.join(os.fsencode(folder), urllib.parse.unquote_to_bytes(link))


def check_page(out):
    """The page parses, every link resolves inside pred_dir, and the cards match predictions.csv."""
    page = Page(out / "index.html")
    assert page.stack == [], f"unclosed tags {page.stack}"
    for link in page.links:
        if link.startswith("#"):
            assert link[1:] in page.ids
            continue
        target = resolve(out, link)
        assert os.path.exists(target), link
        assert os.path.realpath(target).startswith(os.path.realpath(os.fsencode(out))) or \
            os.path.islink(target), link  # inside pred_dir, or its clusters/ link to the original
    with open(out / "predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sizes = {}
    for r in rows:
        sizes[r["cluster"]] = sizes.get(r["cluster"], 0) + 1
    assert set(page.cards) == {f"c{c}" for c in sizes}
    order = [int(c[1:]) for c in page.cards]
    assert [sizes[str(c)] for c in order] == sorted(sizes.values(), reverse=True)  # largest first
    for cid, size in sizes.items():
        card = page.cards[f"c{cid}"]
        assert f"Cluster {cid} \u00b7 {size} image" in card["text"]
        assert card["thumbs"] == min(size, report.TYPICAL + report.ATYPICAL)
    return page, rows


def test_the_page_parses_links_resolve_and_cards_match_the_predictions(trained, tmp_path):
    tree, exp = trained
    out = tmp_path / "out"
    result = pred.main("cpu", train_args(tree, exp, "--pred_dir", str(out), "--test_path", tree))
    page, rows = check_page(out)
    assert (out / "map.png").exists() and "map.png" in page.links
    text = (out / "index.html").read_text(encoding="utf-8")
    assert f"NMI {result['nmi']:.3f}" in text and "held out" not in text and "training images" in text
    assert 'loading="lazy"' in text and "<script" not in text
    thumbs = sorted(os.listdir(out / "thumbs"))
    assert len(thumbs) == len(rows)  # 24 images: every one is shown
    with Image.open(out / "thumbs" / thumbs[0]) as img:
        assert img.format == "JPEG" and max(img.size) <= thumbnails.THUMB_SIDE
    manifest = json.loads((out / ".pred_manifest.json").read_text())["files"]
    assert "index.html" in manifest and "map.png" in manifest and f"thumbs/{thumbs[0]}" in manifest


def test_hostile_file_names_stay_escaped_and_linked(trained, tmp_path):
    tree, exp = trained
    odd = make_blob_tree(tmp_path / "odd", classes=2, per_class=3)
    names = [b"caf\xe9 \xff.png", b'<a&"b>.png', b"two  spaces & more.png"]
    for old, new in zip(sorted(os.listdir(os.path.join(odd, "class_0"))), names):
        os.rename(os.path.join(os.fsencode(odd), b"class_0", os.fsencode(old)), os.path.join(os.fsencode(odd),
                                                                                             b"class_0", new))
    out = tmp_path / "out"
    pred.main("cpu", train_args(tree, exp, "--pred_dir", str(out), "--test_path", odd, "--map", "false"))
    page, _ = check_page(out)
    assert {'<a&"b>.png', "caf\\xe9 \\xff.png", "two  spaces & more.png"} <= {t.split("  (")[0] for t in page.titles}
    originals = {os.path.realpath(resolve(out, link)) for link in page.links if link.startswith("clusters/")}
    assert {os.path.join(os.fsencode(odd), b"class_0", n) for n in names} <= originals
    raw = (out / "index.html").read_bytes()
    assert b'<a&"b>' not in raw and b"&lt;a&amp;&quot;b&gt;" in raw and b"%FF.png" in raw
    raw.decode("utf-8")  # the page is valid UTF-8 whatever the names


@pytest.mark.slow
def test_a_rerun_replaces_the_page_and_foreign_files_still_stop_pred(trained, tmp_path):
    tree, exp = trained
    out = tmp_path / "out"
    args = train_args(tree, exp, "--pred_dir", str(out), "--test_path", tree)
    pred.main("cpu", args + ["--pred_mode", "recluster", "--pred_k", "2"])
    assert len(Page(out / "index.html").cards) == 2
    pred.main("cpu", args + ["--map", "false"])
    page, _ = check_page(out)
    assert len(page.cards) == 3 and not (out / "map.png").exists() and "map.png" not in page.links
    pred.main("cpu", args + ["--report", "false"])
    assert not (out / "index.html").exists() and not (out / "thumbs").exists() and (out / "map.png").exists()
    pred.main("cpu", args)
    foreign = out / "thumbs" / "mine.jpg"
    foreign.write_bytes(b"not ours")
    with pytest.raises(SystemExit, match="mine.jpg"):
        pred.main("cpu", args)
    assert foreign.read_bytes() == b"not ours" and (out / "index.html").exists()


def test_thumbnails_from_pil_images_and_uint8_tensors():
    big = Image.new("RGB", (300, 150), (200, 10, 10))
    for image in (big, torch.from_numpy(np.array(big)).permute(2, 0, 1).contiguous()):
        with Image.open(__import__("io").BytesIO(thumbnails.thumbnail_jpeg(image))) as img:
            assert img.format == "JPEG" and img.size == (128, 64)
            assert abs(img.getpixel((60, 30))[0] - 200) < 12
    small = torch.zeros(3, 20, 30, dtype=torch.uint8)
    with Image.open(__import__("io").BytesIO(thumbnails.thumbnail_jpeg(small))) as img:
        assert img.size == (30, 20)  # never enlarged


def test_the_page_caps_the_clusters_it_shows(tmp_path):
    n, k = 390, 30  # 13 images a cluster
    ids = np.arange(n) % k
    p = report.Prediction([f"/x/{i}.png" for i in range(n)], [f"clusters/{c}/{i}.png" for i, c in enumerate(ids)],
                          ids, np.linspace(0, 1, n), None, [], {"n_images": n, "k": k, "mode": "assign",
                          "checkpoint": "c", "checkpoint_epoch": 1, "clusters_nonempty": k, "images": "unknown"},
                          "/x", [b"jpeg"] * n)
    written = report.write_page(str(tmp_path), p, max_clusters=5)
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert text.count('<section class="card"') == 5 and "the 5 largest of the 30 clusters" in text
    assert written == 5 * min(n // k, report.TYPICAL + report.ATYPICAL) == len(os.listdir(tmp_path / "thumbs"))
    assert "Clusters x classes" not in text  # no labels, no table


def test_each_card_shows_its_nearest_images_then_apart_its_farthest():
    rng = np.random.default_rng(1)
    n = 100
    ids = rng.integers(0, 2, n)
    dist = rng.random(n)
    dist[:4] = 0.5  # ties: the smaller row first
    p = report.Prediction([f"/x/{i}.png" for i in range(n)], [f"clusters/{c}/{i}.png" for i, c in enumerate(ids)],
                          ids, dist, None, [], {"n_images": n, "k": 2, "mode": "assign", "checkpoint": "c",
                          "checkpoint_epoch": 1, "clusters_nonempty": 2, "images": "unknown"}, "/x", [b"j"] * n)
    members = report.members_by_distance(ids, dist)
    for cid in (0, 1):
        rows = np.flatnonzero(ids == cid)
        expect = rows[np.argsort(dist[rows], kind="stable")]
        assert members[cid].tolist() == expect.tolist()
        card = report.card_html(p, cid, members[cid], set(), "thumbs")
        typical, odd = card.split("least typical")
        shown = [int(t.split(".")[0]) for t in typical.split("thumbs/")[1:]]
        assert shown == expect[:report.TYPICAL].tolist()
        assert [int(t.split(".")[0]) for t in odd.split("thumbs/")[1:]] == expect[-report.ATYPICAL:].tolist()


def test_the_map_draws_a_subset_above_its_limit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    ids = np.arange(60) % 3
    assert report.write_map(str(tmp_path / "m.png"), x, ids, ids, ["a", "b", "c"], max_points=25) == 25
    with Image.open(tmp_path / "m.png") as img:
        assert img.format == "PNG" and img.width > 300
    assert report.write_map(str(tmp_path / "none.png"), x[:2], ids[:2]) == 0 and not (tmp_path / "none.png").exists()


@pytest.mark.slow
def test_curves_png_after_one_epoch_and_after_a_resume(blob_tree, tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    drawn = []
    real = curves.plot_curves
    monkeypatch.setattr(curves, "plot_curves", lambda runs, out, title=None: drawn.append(runs) or real(runs, out))
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1"))
    with Image.open(exp / "curves.png") as img:
        assert img.format == "PNG" and img.width > img.height > 300
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2"))
    assert [len(runs[0].rows) for runs in drawn] == [1, 2]  # the resumed run draws both epochs
    assert drawn[-1][0].final["reclustered"] and drawn[-1][0].selected in (1, 2)
    assert curves.curve_points(drawn[-1][0], "loss")[0] == [1, 2]
    assert curves.curve_points(drawn[-1][0], "nmi")[0] == [0, 1, 2]  # the random network's clustering at 0
    assert not [f for f in os.listdir(exp) if ".tmp." in f]


def test_the_curves_command_marks_the_chosen_epoch_from_the_checkpoint(trained, tmp_path):
    _, exp = trained
    run = curves.read_run(str(exp))
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert run.selected == ckpt["selected"]["epoch"] and run.final == ckpt["clustering_metrics"]
    assert curves.curve_points(run, "nmi")[0] == [0, 1, 2]
    plot_curves.main([str(exp), "--out", str(tmp_path / "c.png"), "--title", "one run"])
    assert (tmp_path / "c.png").exists() and (exp / "curves.png").exists()  # train.py drew its own too


@pytest.mark.slow
def test_the_curves_command_marks_the_last_epoch_of_a_select_epoch_last_run(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2", "--select_epoch", "last"))
    assert curves.read_run(str(exp)).selected == 2  # as the dotted line of train.py's own curves.png


def test_identical_embeddings_get_a_map_instead_of_a_crash():
    """All rows equal: scikit-learn's PCA start divides by a zero spread and its Barnes-Hut code then dies in
    native code (a segfault that takes pred.py with it); the map puts every image at one point."""
    png, drawn = report.map_png(np.ones((5, 8), np.float32), np.zeros(5, dtype=np.int64))
    assert drawn == 5 and png.startswith(b"\x89PNG")


def test_a_failing_map_is_one_warning_and_the_page_goes_without_it(trained, tmp_path, monkeypatch, capsys):
    tree, exp = trained

    def broken(*args, **kwargs):
        raise ValueError("t-SNE diverged")
    monkeypatch.setattr(report, "map_png", broken)
    out = tmp_path / "out"
    pred.main("cpu", train_args(tree, exp, "--pred_dir", str(out), "--test_path", tree))
    page, _ = check_page(out)
    assert not (out / "map.png").exists() and "map.png" not in page.links
    printed = capsys.readouterr().out
    assert "warning: map.png not written: ValueError: t-SNE diverged" in printed and ", map.png" not in printed


@pytest.mark.slow
def test_a_plotting_error_is_one_log_line_and_the_run_goes_on(blob_tree, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")
    monkeypatch.setattr(curves, "plot_curves", broken)
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1"))
    log = (exp / "train.log").read_text(encoding="utf-8")
    assert "warning: curves.png not written: RuntimeError: no fonts" in log and (exp / "checkpoint.pth.tar").exists()


def test_an_interrupted_curves_write_leaves_the_previous_png(tmp_path, monkeypatch):
    rows = [{"epoch": e, "loss": 2.0 - e, "nmi": 0.4, "nmi_prev": 0.5, "reclustered": True} for e in range(3)]
    out = tmp_path / "curves.png"
    curves.plot_curves([curves.Curves(rows)], str(out))
    before = out.read_bytes()
    import matplotlib.figure

    def cut(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", cut)
    with pytest.raises(KeyboardInterrupt):
        curves.plot_curves([curves.Curves(rows)], str(out))
    assert out.read_bytes() == before and os.listdir(tmp_path) == ["curves.png"]


def test_tensorboard_without_the_package_is_one_line(blob_tree, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(SystemExit) as e:
        train.main("cpu", train_args(blob_tree, tmp_path / "exp", "--tensorboard", "true"))
    msg = str(e.value.code)
    assert msg.startswith("config error: tensorboard true needs the tensorboard package") and "\n" not in msg
    assert not (tmp_path / "exp" / "checkpoint.pth.tar").exists()


def test_tensorboard_scalars_follow_the_curves_steps():
    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = (value, step)

        def flush(self):
            pass
    w = Writer()
    curves.log_scalars(w, {"epoch": 3, "loss": 1.5, "nmi": 0.4, "nmi_prev": None, "reclustered": True,
                           "images_per_s": float("nan")})
    assert w.scalars == {"train/loss": (1.5, 4), "clustering/nmi": (0.4, 3)}


def test_a_run_without_labels_says_so_on_its_panel_without_a_matplotlib_warning():
    """The dotted line of the chosen epoch is no data: the labels panel of a flat folder says "no labels" and
    draws no empty legend (matplotlib warned on every epoch)."""
    import warnings
    from matplotlib.figure import Figure
    rows = [{"epoch": e, "loss": 1.0, "nmi": None, "ari": None, "nmi_prev": 0.5, "reclustered": True}
            for e in range(3)]
    ax = Figure().subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curves.draw_panel(ax, [curves.Curves(rows, None, 2)], "labels", "clustering against the labels")
    assert [t.get_text() for t in ax.texts] == ["no labels"] and ax.get_legend() is None
