"""collection.py: k chosen without labels, near-duplicates, similar images and outlier scores; and pred.py's
outputs of them (duplicates.csv, similar.csv, outlier_score, k_selection, the page's sections)."""
import contextlib
import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

import clustering
import collection
import pred
from conftest import train_args
from test_report import check_page, resolve


def groups(k, per_group=60, d=24, spread=6.0, seed=0):
    """Rows in k well-separated Gaussian groups (centres N(0, spread^2 I), unit noise), as features."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (k, d))
    return (centres[np.arange(k * per_group) % k] + rng.normal(0, 1, (k * per_group, d))).astype(np.float32)


@pytest.mark.parametrize("k", [3, 7])
def test_auto_k_recovers_the_number_of_well_separated_groups_and_records_its_scores(k):
    features = groups(k)
    xb, _ = clustering.preprocess_features(features, 16)  # as pred.py: k-means of the whitened, normalised rows ...
    neighbours = clustering.apply_pca(features, collection.fit_neighbour_space(features))  # ... scored here
    ks = collection.k_candidates(len(xb), 2, 50)
    assert ks == list(range(2, min(50, len(xb) // 5) + 1))
    chosen, selection = collection.choose_k(xb, ks, seed=1, scored=neighbours)
    assert chosen == k and selection["chosen"] == k and selection["criterion"] == collection.K_CRITERION
    assert selection["rule"] == "hdbscan" and selection["hdbscan_clusters"] == k
    assert list(selection["scores"]) == [str(x) for x in ks] and selection["rows"] == len(xb)
    assert selection["runner_up"] != k and str(selection["runner_up"]) in selection["scores"]
    assert json.loads(json.dumps(selection)) == selection


def k_of(features):
    xb, _ = clustering.preprocess_features(features, 16)
    rows = collection.neighbour_rows(features, collection.fit_neighbour_space(
        features, cosine_max=collection.NEIGHBOUR_COSINE_MAX))
    return collection.choose_k(xb, collection.k_candidates(len(xb), 2, 50), seed=1, scored=rows)[0]


def test_auto_k_finds_five_kinds_that_pair_up_and_five_kinds_of_which_one_is_five_times_larger():
    rng = np.random.default_rng(1)
    pairs = rng.normal(0, 8, (2, 64))  # five clearly different kinds, three like each other and two like each other
    centres = np.array([pairs[i % 2] + rng.normal(0, 2.5, 64) for i in range(5)])
    nested = np.abs(np.vstack([centres[g] + rng.normal(0, 0.5, (12, 64)) for g in range(5)])).astype(np.float32)
    assert k_of(nested) == 5  # the silhouette: 2
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (5, 64))
    imbalanced = np.vstack([centres[g] + rng.normal(0, 1, (n, 64)) for g, n in enumerate([75, 15, 15, 15, 15])])
    assert k_of(imbalanced.astype(np.float32)) == 5  # the silhouette: 8


def test_the_k_range_is_capped_by_the_number_of_images():
    assert collection.k_candidates(100, 2, 50) == list(range(2, 21))  # n / 5
    assert collection.k_candidates(4, 2, 50) == [2] and collection.k_candidates(3, 3, 9) == [2]
    with pytest.raises(ValueError):
        collection.k_candidates(2, 2, 50)


def test_best_k_follows_each_criterion_and_skips_undefined_scores():
    scores = {2: 0.5, 3: float("nan"), 4: 0.7, 5: 0.7}
    assert collection.best_k(scores, "silhouette") == 4 and collection.best_k(scores, "davies_bouldin") == 2
    assert collection.best_k({2: float("nan"), 3: float("nan")}, "silhouette") == 2


def test_neighbours_and_pairs_match_a_full_distance_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    x = clustering.l2_normalize(rng.normal(size=(300, 6)).astype(np.float32))
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    monkeypatch.setattr(collection, "rows_per_chunk", lambda columns, device, itemsize=4: 7)  # 43 chunks, one short
    dist, ids, (i, j, d) = collection.self_neighbours(x, 5, radius=0.2)
    assert np.allclose(dist, np.sort(full, 1)[:, :5], atol=1e-5) and (ids == np.argsort(full, 1)[:, :5]).all()
    a, b = np.triu_indices(300, 1)
    close = full[a, b] <= 0.2
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(a[close].tolist(), b[close].tolist()))
    assert (i < j).all() and (np.diff(d) >= 0).all() and np.allclose(d, full[i, j], atol=1e-5)


def test_outlier_scores_are_the_distance_to_the_fifth_nearest_other_image():
    rng = np.random.default_rng(1)
    crowd = rng.normal(0, 0.1, (40, 2)).astype(np.float32)
    x = np.vstack([crowd, [[5.0, 5.0]], [[1.0, 1.0]]]).astype(np.float32)  # far, then half as far
    dist, _, _ = collection.self_neighbours(x, collection.OUTLIER_NEIGHBOUR)
    score = collection.outlier_scores(dist)
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    assert np.allclose(score, np.sort(full, 1)[:, 4], rtol=1e-4)
    assert list(np.argsort(-score)[:2]) == [40, 41]
    assert np.allclose(collection.outlier_scores(collection.self_neighbours(x[:3], 5)[0]),
                       np.sort(full[:3, :3], 1)[:, 1], rtol=1e-4)  # fewer than 5 others: the farthest one
    assert collection.outlier_scores(collection.self_neighbours(x[:1], 5)[0]).tolist() == [0.0]


def test_duplicate_groups_join_chains_of_pairs():
    pairs = (np.array([0, 1, 5]), np.array([1, 2, 7]), np.zeros(3, np.float32))
    count, group = collection.duplicate_groups(pairs, 9)
    assert count == 2 and group.tolist() == [0, 0, 0, -1, -1, 1, -1, 1, -1]
    assert collection.duplicate_groups((np.array([], int), np.array([], int), np.array([])), 3)[0] == 0


def test_a_query_that_is_one_of_the_images_is_not_its_own_neighbour():
    x = clustering.l2_normalize(np.eye(4, dtype=np.float32) + 0.1)
    (rows, dist), = collection.similar_images(x[2:3], x, 2, own=[2])
    assert 2 not in rows.tolist() and len(rows) == 2 and (np.diff(dist) >= 0).all()
    (rows, _), = collection.similar_images(x[2:3], x, 2)
    assert rows[0] == 2


def test_the_csv_files_round_trip_with_names_that_are_not_utf8(tmp_path):
    paths = [os.fsdecode(b"/p/caf\xe9 \xff.png"), "/p/a,b \"q\".jpg", "/p/plain.png"]
    pairs = (np.array([0, 1]), np.array([2, 2]), np.array([0.0012346, 0.05], np.float32))
    collection.write_duplicates(tmp_path / "d.csv", paths, pairs)
    with open(tmp_path / "d.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path_a"], r["path_b"], float(r["distance"])) for r in rows] == [
        ("/p/caf\\xe9 \\xff.png", "/p/plain.png", 0.001235), ('/p/a,b "q".jpg', "/p/plain.png", 0.05)]
    collection.write_similar(tmp_path / "s.csv", [paths[0]], [(np.array([2, 1]), np.array([0.5, 0.75]))], paths)
    with open(tmp_path / "s.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["query"], int(r["rank"]), r["path"], float(r["distance"])) for r in rows] == [
        ("/p/caf\\xe9 \\xff.png", 1, "/p/plain.png", 0.5), ("/p/caf\\xe9 \\xff.png", 2, '/p/a,b "q".jpg', 0.75)]


# ---------------------------------------------------------------- pred.py's outputs

def shapes(seed, size=48):
    """A picture of a few filled shapes of random colours on a random background."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, size - 12, 2)
        x1, y1 = x0 + rng.integers(10, size // 2), y0 + rng.integers(10, size // 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


@pytest.fixture(scope="module")
def collection_run(trained, tmp_path_factory):
    """pred.py (recluster, pred_k auto, similar_to) on 12 distinct pictures and planted copies of three of them
    (resized to two thirds, re-encoded as JPEG of quality 40; one copy under a name that is not UTF-8), with a
    query folder holding a copy of a fourth picture and a file that does not decode."""
    base = tmp_path_factory.mktemp("collection")
    photos, queries = base / "photos", base / "queries"
    photos.mkdir()
    queries.mkdir()
    for i in range(12):
        shapes(i).save(photos / f"pic_{i:02d}.png")
    for i in range(3):
        shapes(i).resize((32, 32), Image.BICUBIC).save(photos / f"pic_{i:02d}_small.png")
        name = b"pic_%02d_caf\xe9.jpg" % i if i == 0 else b"pic_%02d_q40.jpg" % i
        shapes(i).save(os.path.join(os.fsencode(photos), name), quality=40)
    shapes(5).resize((40, 40), Image.BICUBIC).save(queries / "copy_of_05.jpg", quality=60)
    (queries / "broken.jpg").write_bytes(b"not a picture")
    out, said = base / "pred", io.StringIO()
    with contextlib.redirect_stdout(said):
        result = pred.main("cpu", train_args(trained[0], trained[1], "--pred_dir", str(out), "--test_path",
                                             str(photos), "--pred_mode", "recluster", "--pred_k", "auto",
                                             "--similar_to", str(queries), str(photos / "pic_07.png"),
                                             "--similar_k", "3"))
    return out, result, said.getvalue()


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_planted_copies_are_found_and_distinct_pictures_are_not_paired(collection_run):
    out, result, said = collection_run
    pairs = {frozenset((os.path.basename(r["path_a"]), os.path.basename(r["path_b"]))) for r in
             read_csv(out / "duplicates.csv")}
    copies = [["pic_00.png", "pic_00_small.png", "pic_00_caf\\xe9.jpg"]] + \
        [[f"pic_{i:02d}.png", f"pic_{i:02d}_small.png", f"pic_{i:02d}_q40.jpg"] for i in (1, 2)]
    expected = {frozenset((a, b)) for group in copies for a in group for b in group if a < b}  # listed pairwise
    assert pairs == expected
    setting = pred.load_cfg([], script="pred")["duplicate_threshold"]
    assert result["duplicates"] == {"threshold": setting, "duplicate_threshold": setting, "crowd_distance": None,
                                    "pairs": 9, "groups": 3, "exact_pairs": 0,
                                    "declined": 0}  # 18 images: too few for the crowd's bound
    rows = read_csv(out / "duplicates.csv")
    assert [float(r["distance"]) for r in rows] == sorted(float(r["distance"]) for r in rows)


def test_similar_to_a_copy_ranks_its_original_first_and_a_broken_query_is_one_line(collection_run):
    out, result, said = collection_run
    rows = read_csv(out / "similar.csv")
    by_query = {}
    for r in rows:
        by_query.setdefault(os.path.basename(r["query"]), []).append(r)
    assert set(by_query) == {"copy_of_05.jpg", "pic_07.png"} and result["similar_queries"] == 2
    assert os.path.basename(by_query["copy_of_05.jpg"][0]["path"]) == "pic_05.png"
    assert [int(r["rank"]) for r in by_query["copy_of_05.jpg"]] == [1, 2, 3]
    assert "pic_07.png" not in {os.path.basename(r["path"]) for r in by_query["pic_07.png"]}  # not its own neighbour
    assert [line for line in said.splitlines() if "broken.jpg" in line] == [
        line for line in said.splitlines() if line.startswith("warning")]
    assert len([line for line in said.splitlines() if "broken.jpg" in line]) == 1


def test_auto_k_outliers_and_the_page(collection_run):
    out, result, said = collection_run
    chosen = result["k_selection"]
    assert result["k"] == chosen["chosen"] and str(result["k"]) in chosen["scores"]
    assert list(chosen["scores"]) == ["2", "3"]  # 2 .. n / 5 of 18 images
    predictions = read_csv(out / "predictions.csv")
    scores = np.array([float(r["outlier_score"]) for r in predictions])
    assert len(scores) == 18 and (scores >= 0).all()
    page, _ = check_page(out)
    text = (out / "index.html").read_text(encoding="utf-8")
    for anchor in ("duplicates", "similar", "outliers"):
        assert anchor in page.ids and f'href="#{anchor}"' in text
    assert "9 pairs in 3 groups" in text and "k_selection.png" in page.links
    manifest = json.loads((out / ".pred_manifest.json").read_text())["files"]
    assert {"duplicates.csv", "similar.csv", "k_selection.png", "thumbs/query_0000.jpg"} <= set(manifest)
    assert os.path.exists(resolve(out, "thumbs/query_0000.jpg"))


def test_in_a_crowd_of_look_alikes_only_the_pairs_that_stand_out_are_duplicates():
    rng = np.random.default_rng(3)
    crowd = clustering.l2_normalize(rng.normal(0, 0.05, (60, 32)) + np.eye(32)[0]).astype(np.float32)  # one kind
    copy = clustering.l2_normalize(crowd[:1] + rng.normal(0, 0.002, (1, 32))).astype(np.float32)
    x = np.vstack([crowd, copy])
    (i, j, d), radius, median = collection.duplicate_pairs(x, 0.23)
    tenth = collection.self_neighbours(x, 10)[0][:, 9]
    assert median == pytest.approx(float(np.median(tenth))) and radius == pytest.approx(0.25 * median)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 60)]
    (i, _, _), radius, median = collection.duplicate_pairs(x[:20], 0.23)  # too few images for a crowd
    full = ((x[:20, None] - x[None, :20]) ** 2).sum(-1)[np.triu_indices(20, 1)]
    assert median is None and radius == 0.23 and len(i) == (full <= 0.23).sum() > 100


# ---------------------------------------------------------------- answers a user can act on

def prints_of(images):
    """collection.fingerprint of PIL images, stacked as pred.py keeps them."""
    prints = [collection.fingerprint(img) for img in images]
    return {key: np.stack([p[key] for p in prints]) for key in prints[0]}


def stripes(phase, side=96, period=12.0, colours=((30, 60, 200), (240, 220, 40))):
    y = np.mgrid[0:side, 0:side][0]
    t = (0.5 + 0.5 * np.sin(2 * np.pi * (y / period + phase)))[..., None]
    return Image.fromarray((np.array(colours[0]) * (1 - t) + np.array(colours[1]) * t).astype(np.uint8))


def gradient(c0, c1, side=96):
    t = (np.mgrid[0:side, 0:side][1] / (side - 1))[..., None]
    return Image.fromarray((np.array(c0) * (1 - t) + np.array(c1) * t).astype(np.uint8))


def test_exact_copies_are_listed_at_distance_0_whatever_the_threshold():
    images = [shapes(1)] * 12 + [shapes(i) for i in range(2, 8)]  # 12 byte-identical pictures, 6 others
    (i, j, d), _, _, _ = collection.find_duplicates(prints_of(images), 1e-9)
    assert sorted(zip(i.tolist(), j.tolist())) == [(a, b) for a in range(12) for b in range(a + 1, 12)]
    assert (d == 0).all()  # 66 pairs, none at 1.2e-7


def test_pictures_kept_at_several_sizes_do_not_hide_the_cropped_copies_elsewhere():
    many = [shapes(i).resize((s, s), Image.BICUBIC) for i in range(30) for s in (40, 44, 48, 52, 56, 60, 64, 72, 80,
                                                                                  96, 112, 128)]
    cropped = [(shapes(100 + i), shapes(100 + i).crop((1, 1, 47, 47))) for i in range(10)]
    images = many + [img for pair in cropped for img in pair]
    (i, j, _), radius, crowd, _ = collection.find_duplicates(prints_of(images), 0.23)
    found = set(zip(i.tolist(), j.tolist()))
    planted = [(len(many) + 2 * k, len(many) + 2 * k + 1) for k in range(10)]
    assert crowd > 0.1 and sum(p in found for p in planted) >= 8  # the old bound: 0/10 found, crowd 0.00x


def test_two_pictures_of_one_kind_are_not_the_same_picture():
    images = [stripes(0.0), stripes(0.5), gradient((20, 40, 200), (250, 250, 250)),
              gradient((200, 30, 20), (250, 250, 250))]
    prints = prints_of(images)
    assert collection.confirmed(prints["detail"], np.array([0, 2]), np.array([1, 3])).tolist() == [False, False]
    (i, _, _), _, _, declined = collection.find_duplicates(prints, 0.23)
    assert len(i) == 0 and declined >= 1
    copies = [stripes(0.0).resize((64, 64), Image.BICUBIC), gradient((20, 40, 200), (250, 250, 250)).crop(
        (2, 2, 94, 94))]
    both = prints_of([stripes(0.0), copies[0], images[2], copies[1]])
    assert collection.confirmed(both["detail"], np.array([0, 2]), np.array([1, 3])).tolist() == [True, True]


def test_stand_ins_of_files_that_do_not_decode_are_never_paired(tmp_path):
    from dataset import ClusterDataset
    for name in ("a.jpg", "b.jpg", "c.png"):
        (tmp_path / name).write_bytes(b"not a picture")
    shapes(1).save(tmp_path / "good.png")
    ds = ClusterDataset(str(tmp_path), check_images=False, log=lambda msg: None)
    with pytest.warns(UserWarning):
        prints = prints_of([ds.load(i) for i in range(len(ds))])
    assert prints["stand_in"].ravel().tolist() == [True, True, True, False]
    (i, _, _), _, _, _ = collection.find_duplicates(prints, 0.23)
    assert len(i) == 0  # the three black stand-ins were 3 "duplicates"


def test_two_images_have_a_neighbour_space_that_means_something():
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(2, 64))).astype(np.float32)
    space = collection.fit_neighbour_space(features, cosine_max=collection.NEIGHBOUR_COSINE_MAX)
    rows = collection.neighbour_rows(features, space)
    d = float(((rows[0] - rows[1]) ** 2).sum())
    assert 0.01 < d < 3.99  # one principal direction: 0 or 4
    assert d == pytest.approx(2 - 2 * float(features[0] @ features[1] / np.linalg.norm(features, axis=1).prod()),
                              abs=1e-5)


def test_a_lone_picture_among_look_alikes_ranks_in_the_top_few_and_copies_count_once():
    rng = np.random.default_rng(4)
    base = np.abs(rng.normal(size=512))
    crowd = base + 0.3 * np.abs(rng.normal(size=(47, 512)))  # fc7-like: non-negative, alike
    lone = base + 3.0 * np.abs(rng.normal(size=(1, 512)))
    features = np.vstack([crowd, lone]).astype(np.float32)
    space = collection.fit_neighbour_space(features, cosine_max=collection.NEIGHBOUR_COSINE_MAX)
    rows = collection.neighbour_rows(features, space)
    dist, ids, _ = collection.self_neighbours(rows, collection.OUTLIER_NEIGHBOUR + collection.OUTLIER_SKIP)
    score = collection.outlier_scores(dist, ids, np.full(48, -1))
    assert 47 in np.argsort(-score)[:3].tolist()
    group = np.full(47, -1)
    group[[3, 4, 5, 6, 7, 8]] = 0  # six copies of one picture
    x = np.vstack([rows[:3], np.repeat(rows[47:48], 6, 0), rows[9:47]])  # ... all of the lone picture
    dist, ids, _ = collection.self_neighbours(x, collection.OUTLIER_NEIGHBOUR + collection.OUTLIER_SKIP)
    score = collection.outlier_scores(dist, ids, group)
    assert score[3:9].min() >= score[np.r_[0:3, 9:47]].max()  # its copies do not make it look like others
    import report
    shown = report.outlier_rows(score, group, 5).tolist()
    assert len(shown) == 5 and sum(3 <= r <= 8 for r in shown) == 1  # the group takes one place, not six


def album_tree(base, trained_tree):
    """photos/library/ and photos/inbox/ (albums, not classes): distinct pictures, an exact copy, two files that
    do not decode, and a resized copy of one of the run's training images."""
    lib, inbox = base / "photos" / "library", base / "photos" / "inbox"
    lib.mkdir(parents=True)
    inbox.mkdir()
    for i in range(6):
        shapes(20 + i).save(lib / f"pic_{i}.png")
        shapes(40 + i).save(inbox / f"new_{i}.png")
    (inbox / "copy_of_pic_0.png").write_bytes((lib / "pic_0.png").read_bytes())
    (inbox / "broken_a.jpg").write_bytes(b"not a picture")
    (inbox / "broken_b.jpg").write_bytes(b"not a picture")
    first = sorted((p for p in (base / trained_tree).rglob("*.png")))[0]
    Image.open(first).resize((30, 30), Image.BICUBIC).save(inbox / "from_training.png")
    return base / "photos", first


@pytest.fixture(scope="module")
def album_run(trained, tmp_path_factory):
    base = tmp_path_factory.mktemp("albums")
    photos, first = album_tree(base, trained[0])
    out, said = base / "pred", io.StringIO()
    with contextlib.redirect_stdout(said), pytest.warns(UserWarning):
        result = pred.main("cpu", train_args(trained[0], trained[1], "--pred_dir", str(out), "--images", str(photos),
                                             "--labels", "none", "--check_images", "false", "--pred_k", "auto"))
    return out, result, said.getvalue(), first


def test_pred_k_auto_in_assign_mode_reclusters_saying_so(album_run):
    out, result, said, _ = album_run
    assert result["mode"] == "recluster" and "k_selection" in result
    assert len([line for line in said.splitlines() if "pred_mode is recluster" in line]) == 1


def test_albums_are_not_classes(album_run):
    out, result, said, _ = album_run
    assert "nmi" not in result and "n_classes" not in result
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Clusters x classes" not in page
    assert {r["label"] for r in read_csv(out / "predictions.csv")} == {""}


def test_pred_k_0_with_labels_none_is_not_the_number_of_folders(trained, tmp_path):
    photos, _ = album_tree(tmp_path, trained[0])
    with contextlib.redirect_stdout(io.StringIO()), pytest.warns(UserWarning):
        result = pred.main("cpu", train_args(trained[0], trained[1], "--pred_dir", str(tmp_path / "p"), "--images",
                                             str(photos), "--labels", "none", "--pred_mode", "recluster",
                                             "--check_images", "false", "--report", "false", "--map", "false"))
    assert result["k"] == 3  # the run's num_classes, not the 2 folders


def test_duplicates_name_their_files_and_new_images_already_in_training_are_listed(album_run):
    out, result, said, first = album_run
    pairs = {frozenset((os.path.basename(r["path_a"]), os.path.basename(r["path_b"]))): float(r["distance"])
             for r in read_csv(out / "duplicates.csv")}
    assert pairs.get(frozenset(("pic_0.png", "copy_of_pic_0.png"))) == 0.0
    assert not any("broken" in name for pair in pairs for name in pair)  # stand-ins never paired
    rows = read_csv(out / "duplicates_of_training.csv")
    assert [(os.path.basename(r["path"]), os.path.basename(r["training_path"])) for r in rows] == [
        ("from_training.png", first.name)]
    assert result["duplicates_of_training"] == 1
    page = (out / "index.html").read_text(encoding="utf-8")
    section = page[page.index('id="duplicates"'):page.index('id="outliers"')]
    assert '<span class="name">copy_of_pic_0.png</span>' in section
    outliers = page[page.index('id="outliers"'):]
    assert outliers.count('<span class="name">') >= 5


def test_thousands_of_the_same_picture_are_listed_without_millions_of_pairs():
    keys = np.array([5] * 3000 + [7, 7, 9], np.int64)
    with pytest.warns(UserWarning, match="3,000 images have the same pixels"):
        i, j = collection.exact_pairs(keys, np.arange(len(keys)))
    assert len(i) == 3000 and set(zip(i.tolist(), j.tolist())) >= {(0, 2999), (3000, 3001)}
