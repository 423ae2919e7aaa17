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
    assert list(selection["scores"]) == [str(x) for x in ks] and selection["rows"] == len(xb)
    assert max(selection["scores"].values()) == selection["scores"][str(k)]  # silhouette: the highest wins
    assert json.loads(json.dumps(selection)) == selection


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
