"""The measurements behind pred.py's answers about one's own collection (docs/results.md, "Your own collection").

    python tools/collection_measure.py duplicates --runs pixels exp/dup_random exp/fashion_mnist_small
    python tools/collection_measure.py rule --trees bench/photos_tree_duplicates
    python tools/collection_measure.py k --runs exp/fashion_mnist_small exp/fm_random --draws 3
    python tools/collection_measure.py similar --runs pixels exp/fashion_mnist_small exp/fm_random

duplicates: a collection of real photographs with planted copies (build_duplicate_tree: the quarters of the
    wallpaper photographs of Debian's mate-backgrounds and plasma-workspace-wallpapers, each quarter a different
    photo of the same scene, and the artwork of those and of gnome-backgrounds whole; a third of them copied six
    ways: resized, re-encoded, lightly cropped, recoloured, all four at once, and cropped more than lightly). For
    each run's network and candidate space (run "pixels": collection.pixel_signature), the squared distances of
    every pair of images: the threshold that finds every original-copy pair of one half of the source pictures,
    and at it the pairs found and the false pairs of the other half and of the whole collection.
rule: pred.py's rule (collection.duplicate_pairs) on image folders: the radius, the pairs; with a truth.json (the
    trees above, or another with planted copies) the copies found per kind and the false pairs.
k:  Fashion-MNIST subsets of the TRAINING file (images 200-499 of each class: none of the shipped sample's) with
    2, 5 and 10 classes, and synthetic Gaussian groups; for each criterion of collection.K_CRITERIA, computed on
    the whitened rows the k-means partitioned and (name@pca64) in the neighbour space, the k it chooses over the
    default range against the true number of groups.
similar: on the same 3,000 Fashion-MNIST images, for each run's network and candidate space (run "pixels": the
    pixel signatures), the share of every image's 10 nearest other images that are of its class (precision at 10).
Prints tables and writes JSON (--out). The trees are built under bench/ (ignored by git) on first use; the
wallpapers come from `apt-get install -y mate-backgrounds gnome-backgrounds plasma-workspace-wallpapers`.
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clustering  # noqa: E402
import collection  # noqa: E402
from cfg import load_cfg  # noqa: E402
from checkpoint import load_model, run_settings  # noqa: E402
from dataset import ClusterDataset, eval_transform, open_split  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402

WALLPAPERS = "/usr/share/backgrounds"  # mate-backgrounds, gnome-backgrounds
PLASMA = "/usr/share/wallpapers"  # plasma-workspace-wallpapers: <name>/contents/images/<width>x<height>.<ext>
# photographs, cut into TILES x TILES different pictures of one scene each
PHOTOS = ["mate/nature/*.jpg", "mate/abstract/Elephants.jpg"]
PLASMA_PHOTOS = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Kite",
                 "OneStandsOut", "Opal", "Path", "summer_1am"]
# artwork, whole: one of each family of variants (light/dark, several sizes)
WHOLE = ["gnome/adwaita-l.webp", "gnome/grid-l.webp", "gnome/licorice-l.webp", "gnome/pixels-l.webp",
         "gnome/symbolic-l.webp", "gnome/truchet-l.webp", "gnome/wood-l.webp",
         "mate/abstract/Arc-Colors-Transparent-Wallpaper.png", "mate/abstract/Flow.png", "mate/abstract/Gulp.png",
         "mate/desktop/Float-into-MATE.png", "mate/desktop/GreenTraditional.jpg", "mate/desktop/Stripes.png",
         "mate/desktop/Ubuntu-Mate-Warm-no-logo.png"]  # Silk, Spring, Waves, MATE-Stripes-Light: blank in RGB
PLASMA_WHOLE = ["Altai", "Autumn", "Canopee", "Cascade", "Cluster", "Elarun", "Flow", "FlyingKonqui", "Honeywave",
                "IceCold", "Kay", "Kokkini", "MilkyWay", "PastelHills", "Patak", "SafeLanding", "Shell", "Volna"]
TILES = 2
KINDS = ("resized", "reencoded", "cropped", "recoloured", "all", "cropped_more")
LIGHT = KINDS[:5]  # near-duplicates by the definition the threshold is chosen for; cropped_more shows the limit
SPACES = ("clustering", "white64", "pca16", "pca64", "pca128", "fc7")


# ---------------------------------------------------------------- the photo collection with planted copies

def plasma_file(name):
    """The largest landscape image of one plasma wallpaper (each comes in several sizes)."""
    files = glob.glob(os.path.join(PLASMA, name, "contents", "images", "*x*.*"))
    sizes = [tuple(int(v) for v in os.path.splitext(os.path.basename(f))[0].split("x")) for f in files]
    return max((w * h, f) for (w, h), f in zip(sizes, files) if w >= h)[1]


def source_pictures():
    """[(name, RGB PIL image, its source index)] of the distinct pictures: TILES x TILES tiles of each photograph,
    and the artwork whole."""
    photos = sorted(f for pattern in PHOTOS for f in glob.glob(os.path.join(WALLPAPERS, pattern)))
    if not photos or not os.path.isdir(PLASMA):
        sys.exit("no wallpapers: apt-get install -y mate-backgrounds gnome-backgrounds plasma-workspace-wallpapers")
    photos += [plasma_file(name) for name in PLASMA_PHOTOS]
    whole = [os.path.join(WALLPAPERS, w) for w in WHOLE] + [plasma_file(name) for name in PLASMA_WHOLE]
    out = []
    for s, path in enumerate(photos + whole):
        with Image.open(path) as img:
            img.draft("RGB", (img.width // 2, img.height // 2))  # JPEGs: decoded at half size
            img = img.convert("RGB")
        name = os.path.splitext(os.path.basename(path))[0]
        name = path.split(os.sep)[-4] if path.startswith(PLASMA) else name
        if s >= len(photos):
            out.append((name, img, s))
            continue
        w, h = img.size[0] // TILES, img.size[1] // TILES
        out += [(f"{name}_{r}{c}", img.crop((c * w, r * h, (c + 1) * w, (r + 1) * h)), s)
                for r in range(TILES) for c in range(TILES)]
    return out


def planted_copy(img, kind, rng):
    """A near-duplicate of img: "resized" (to half the side), "reencoded" (JPEG quality 30), "cropped" (2-5% off
    each side: lightly), "recoloured" (saturation x0.5-0.8 or x1.2-1.5, brightness and contrast x0.85-1.15), "all"
    (70% of the side, 2-4% off each side, the colour changes and JPEG quality 50) or "cropped_more" (5-10% off each
    side: more than lightly). Returns (image, JPEG quality)."""
    w, h = img.size
    if kind in ("cropped", "all", "cropped_more"):
        lo, hi = {"cropped": (0.02, 0.05), "all": (0.02, 0.04), "cropped_more": (0.05, 0.10)}[kind]
        cut = rng.uniform(lo, hi, 4)
        img = img.crop((int(cut[0] * w), int(cut[1] * h), w - int(cut[2] * w), h - int(cut[3] * h)))
    if kind in ("recoloured", "all"):
        saturation = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.2, 1.5)
        img = ImageEnhance.Color(img).enhance(saturation)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.85, 1.15))
    if kind in ("resized", "all"):
        scale = 0.5 if kind == "resized" else 0.7
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.BICUBIC)
    return img, {"reencoded": 30, "all": 50}.get(kind, 92)


def build_duplicate_tree(out, seed=0, copied=1 / 3):
    """out/<name>.jpg for every distinct picture and out/<name>~<kind>.jpg for the planted copies of a seeded third
    of them; out/truth.json: {file name: [group (the original's index), source picture index]}. Reused when
    complete."""
    truth_file = os.path.join(out, "truth.json")
    if os.path.exists(truth_file):
        return out
    os.makedirs(out, exist_ok=True)
    rng, truth = np.random.default_rng(seed), {}
    pictures = source_pictures()
    chosen = set(rng.choice(len(pictures), int(len(pictures) * copied), replace=False).tolist())
    for g, (name, img, source) in enumerate(pictures):
        img.save(os.path.join(out, f"{name}.jpg"), quality=92)
        truth[f"{name}.jpg"] = [g, source]
        if g in chosen:
            for kind in KINDS:
                copy, quality = planted_copy(img, kind, rng)
                copy.save(os.path.join(out, f"{name}~{kind}.jpg"), quality=quality)
                truth[f"{name}~{kind}.jpg"] = [g, source]
    with open(truth_file, "w") as f:
        json.dump(truth, f)
    return out


# ---------------------------------------------------------------- features and spaces

def run_features(exp_dir, images):
    """(paths, fc7 features (n, 4096) float32, the run's settings) of the images with the network pred.py uses."""
    given = set()
    c = load_cfg(["--exp_dir", exp_dir, "--test_path", images, "--verbose", "false", "--workers", "0"],
                 script="pred", given=given)
    c, ckpt = run_settings(c, given, "pred.py")
    cpu = torch.device("cpu")
    model = load_model(c, cpu, ckpt)
    data = open_split(c, "test", eval_transform(c["input_size"]), log=lambda msg: None)
    return data.paths, compute_features(make_loader(data, c, cpu), model, cpu, False), c


def pixel_features(images, input_size=64):
    """(paths, pixel signatures (n, 63) float32, settings) of the images decoded as pred.py decodes them for a run at
    input_size (short side 4 x input_size), collection.pixel_signature of each."""
    data = ClusterDataset(images, log=lambda msg: None, decode_side=4 * input_size)
    return data.paths, np.stack([collection.pixel_signature(data.load(i)) for i in range(len(data))]), {"pca_dim": 16}


def space_rows(features, space, pca_dim=16, seed=0):
    """The L2-normalised rows of one candidate space: "clustering" (pred.py's whitened embeddings, pca_dim
    clamped as pred.py clamps it), "white64" (whitened to 64), "pcaD" (top D principal directions, not whitened),
    "fc7" (the centred features), "as is" (the rows themselves: pixel signatures)."""
    if space == "as is":
        return features
    if space == "clustering":
        return clustering.to_numpy(clustering.preprocess_features(features, pca_dim, seed=seed)[0])
    if space == "fc7":
        return clustering.l2_normalize(features - features.mean(0))
    whiten, dim = space.startswith("white"), int(space.removeprefix("white").removeprefix("pca"))
    return clustering.apply_pca(features, collection.fit_neighbour_space(features, dim, whiten, seed=seed))


def pair_table(x, groups, halves):
    """Squared distances of all pairs i < j of the rows of x (small n: the experiment may hold n x n), split into
    same-group pairs (true) and others (false), each with the half of its source picture (-1 for false pairs of
    two halves)."""
    d = np.maximum(2 - 2 * (x @ x.T), 0)
    i, j = np.triu_indices(len(x), 1)
    same = groups[i] == groups[j]
    half = np.where(halves[i] == halves[j], halves[i], -1)
    return d[i, j], same, half, (i, j)


def duplicate_scores(d, same, half, kinds, picture_pairs=None):
    """The threshold that finds every original-copy pair of half 0 whose copy is a near-duplicate (LIGHT kinds), the
    largest of their distances, and at it: the share of half 1's such pairs found (all, and per kind, cropped_more
    included), and the false pairs (different pictures) of half 1 and of the whole collection, also counted once
    per two pictures (their copies joined). kinds: per pair, the copy's kind ("" for two copies); picture_pairs:
    per pair, the names of its two pictures."""
    light = np.isin(kinds, LIGHT)
    chosen = float(d[same & light & (half == 0)].max())
    check, found = same & light & (half == 1), d <= chosen
    return {"threshold": chosen, "found_half1": float(found[check].mean()),
            "false_half1": int((found & ~same & (half == 1)).sum()), "false_all": int((found & ~same).sum()),
            "false_pictures": sorted({tuple(sorted(p)) for p in np.asarray(picture_pairs)[found & ~same].tolist()})
            if picture_pairs is not None else [],
            "largest_light": float(d[same & light].max()), "smallest_false": float(d[~same].min()),
            "per_kind_found_half1": {k: float(found[same & (kinds == k) & (half == 1)].mean()) for k in KINDS
                                     if (kinds == k).any()},
            "per_kind_largest": {k: float(d[same & (kinds == k)].max()) for k in KINDS if (kinds == k).any()}}


def pair_kinds(names, i, j):
    """Per pair (i, j) of images: the copy's kind when one of the two is the original, else ""."""
    kind = np.array([n.split("~")[1][:-4] if "~" in n else "" for n in names])
    return np.where(kind[i] == "", kind[j], np.where(kind[j] == "", kind[i], ""))


def measure_duplicates(runs, tree, spaces=SPACES):
    """{run: {space: duplicate_scores}} on the photo collection (see the module's docs); run "pixels" is the
    pixel signature (collection.pixel_signature) instead of a network's features."""
    with open(os.path.join(tree, "truth.json")) as f:
        truth = json.load(f)
    results = {}
    for run in runs:
        paths, features, c = pixel_features(tree) if run == "pixels" else run_features(run, tree)
        names = [os.path.basename(p) for p in paths]
        groups = np.array([truth[n][0] for n in names])
        halves = np.array([truth[n][1] % 2 for n in names])
        results[run] = {}
        for space in (["as is"] if run == "pixels" else spaces):
            x = space_rows(features, space, c["pca_dim"])
            d, same, half, (i, j) = pair_table(x, groups, halves)
            picture = np.array([os.path.splitext(n.split("~")[0])[0] for n in names])
            results[run][space] = r = duplicate_scores(d, same, half, pair_kinds(names, i, j),
                                                       np.stack([picture[i], picture[j]], 1))
            print(f"{run:28s} {space:10s} threshold {r['threshold']:.4f}  found (half 1) {r['found_half1']:.3f}  "
                  f"false: half 1 {r['false_half1']}, all {r['false_all']} ({len(r['false_pictures'])} pictures)  largest light {r['largest_light']:.4f}  "
                  f"smallest false {r['smallest_false']:.4f}  " + " ".join(
                      f"{k} {v:.2f}" for k, v in r["per_kind_found_half1"].items()))
    return results


def measure_rule(trees, threshold, input_size=64):
    """pred.py's rule (collection.duplicate_pairs on pixel signatures) on each tree: the radius it used, the
    pairs found; with a truth.json also the original-copy pairs found per kind and the false pairs (also counted
    once per two pictures)."""
    out = {}
    for tree in trees:
        paths, signatures, _ = pixel_features(tree, input_size)
        (i, j, d), radius, crowd = collection.duplicate_pairs(signatures, threshold)
        r = out[tree] = {"images": len(paths), "radius": radius, "crowd": crowd, "pairs": len(i)}
        if os.path.exists(os.path.join(tree, "truth.json")):
            with open(os.path.join(tree, "truth.json")) as f:
                truth = json.load(f)
            names = [os.path.basename(p) for p in paths]
            groups, picture = np.array([truth[n][0] for n in names]), np.array([os.path.splitext(n.split("~")[0])[0] for n in names])
            full, same, _, (a, b) = pair_table(signatures, groups, np.zeros(len(names), int))
            kinds, found = pair_kinds(names, a, b), full <= radius
            r["found"] = {k: float(found[same & (kinds == k)].mean()) for k in KINDS if (kinds == k).any()}
            r["found_light"] = float(found[same & np.isin(kinds, LIGHT)].mean())
            r["false"] = int((found & ~same).sum())
            r["false_pictures"] = len({tuple(sorted(p)) for p in zip(picture[a][found & ~same], picture[b][found & ~same])})
        print(f"{tree}: {r}")
    return out


# ---------------------------------------------------------------- k chosen without labels

def fashion_pool(out):
    """Images 200-499 of every class of Fashion-MNIST's training file as out/val/<class>/ (tools/make_fashion_mnist.py:
    none of them is in the shipped sample, which holds images 0-199)."""
    if not os.path.isdir(os.path.join(out, "val")):
        import subprocess
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), "--out", out,
                        "--train_per_class", "200", "--val_per_class", "300", "--test_per_class", "1"], check=True)
    return os.path.join(out, "val")


def fashion_subsets(labels, draws, per_class=200, sizes=(2, 5, 10), seed=0):
    """[(true k, row indices)]: for each number of classes, `draws` random choices of that many classes with
    per_class random images of each."""
    rng, out = np.random.default_rng(seed), []
    for n_classes in sizes:
        for _ in range(draws):
            classes = rng.choice(np.unique(labels), n_classes, replace=False)
            rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in classes])
            out.append((n_classes, np.sort(rows)))
    return out


def gaussian_groups(k, n=1000, d=128, spread=3.0, seed=0):
    """n rows of d dims in k equal groups: centres N(0, spread^2 I), points = centre + N(0, I)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (k, d))
    return (centres[np.arange(n) % k] + rng.normal(0, 1, (n, d))).astype(np.float32)


def k_row(true_k, features, pca_dim, seed):
    """{criterion: chosen k} and the scores, for one set: pred.py's whitening, then collection.k_scores over the
    default range; each criterion computed on the whitened rows the k-means partitioned and (name@pca64) on the
    same images' rows in the neighbour space (64 principal directions, not whitened)."""
    xb, _ = clustering.preprocess_features(features, pca_dim, seed=seed)
    ks = collection.k_candidates(len(features), 2, 50)
    t0 = time.perf_counter()
    scores, _ = collection.k_scores(xb, ks, collection.K_CRITERIA, seed=seed)
    neighbour = clustering.apply_pca(features, collection.fit_neighbour_space(features, 64, whiten=False, seed=seed))
    other, _ = collection.k_scores(xb, ks, collection.K_CRITERIA[:3], seed=seed, scored=neighbour)
    scores.update({f"{c}@pca64": s for c, s in other.items()})
    chosen = {c: collection.best_k(s, c) for c, s in scores.items()}
    print(f"  true k {true_k:3d}, n {len(features)}: " + "  ".join(f"{c} {k}" for c, k in chosen.items())
          + f"  ({time.perf_counter() - t0:.1f} s)")
    return {"true_k": true_k, "n": len(features), "chosen": chosen,
            "scores": {c: {str(k): v for k, v in s.items()} for c, s in scores.items()}}


def measure_k(runs, pool, draws, seed=0):
    """{set name: [k_row]}: Fashion-MNIST subsets with each run's network, and synthetic groups (well separated:
    spread 3; overlapping: spread 1)."""
    results = {}
    for run in runs:
        paths, features, c = run_features(run, pool)
        labels = np.unique([os.path.basename(os.path.dirname(p)) for p in paths], return_inverse=True)[1]
        print(run)
        results[run] = [k_row(k, features[rows], c["pca_dim"], seed + r)
                        for r, (k, rows) in enumerate(fashion_subsets(labels, draws, seed=seed))]
    for spread in (3.0, 1.0):
        name = f"gaussian groups, spread {spread}"
        print(name)
        results[name] = [k_row(k, gaussian_groups(k, spread=spread, seed=seed + r), 16, seed + r)
                         for k in (3, 6, 10, 20) for r in range(draws)]
    return results


def measure_similar(runs, pool, m=10, seed=0):
    """{run: {space: precision at m}}: the share of each image's m nearest other images (collection.self_neighbours,
    squared L2 between the space's rows) that share its class, averaged over the images of pool."""
    results = {}
    for run in runs:
        paths, features, c = pixel_features(pool) if run == "pixels" else run_features(run, pool)
        labels = np.unique([os.path.basename(os.path.dirname(p)) for p in paths], return_inverse=True)[1]
        results[run] = {}
        for space in ("as is",) if run == "pixels" else SPACES:
            _, ids, _ = collection.self_neighbours(space_rows(features, space, c["pca_dim"], seed), m)
            results[run][space] = float((labels[ids] == labels[:, None]).mean())
        print(f"{run:28s} " + "  ".join(f"{space} {v:.3f}" for space, v in results[run].items()))
    return results


def summary(results):
    """Per set and criterion: exact hits, mean |chosen - true| and mean chosen k, per true k."""
    lines = []
    for name, rows in results.items():
        for true_k in sorted({r["true_k"] for r in rows}):
            these = [r for r in rows if r["true_k"] == true_k]
            cells = []
            for crit in these[0]["chosen"]:
                chosen = np.array([r["chosen"][crit] for r in these])
                cells.append(f"{crit} {int((chosen == true_k).sum())}/{len(chosen)} "
                             f"(mean {chosen.mean():.1f}, |err| {np.abs(chosen - true_k).mean():.1f})")
            lines.append(f"{name:36s} k={true_k:2d}: " + "; ".join(cells))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("duplicates", "rule", "k", "similar", "tree"))
    p.add_argument("--trees", nargs="*", default=[], help="rule: image folders (with truth.json: planted copies)")
    p.add_argument("--input_size", type=int, default=64, help="rule: images decoded as for this input size")
    p.add_argument("--runs", nargs="*", default=[], help="exp_dirs of trained runs whose networks are measured")
    p.add_argument("--tree", default=os.path.join(ROOT, "bench", "photos_tree_duplicates"))
    p.add_argument("--pool", default=os.path.join(ROOT, "data", "fashion_mnist_kpool"))
    p.add_argument("--threshold", type=float, default=0.23, help="rule: duplicate_threshold")
    p.add_argument("--draws", type=int, default=5, help="k: random subsets per number of classes")
    p.add_argument("--out", default="", help="also write the results as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    if a.part == "tree":
        print(build_duplicate_tree(a.tree))
        return
    if a.part == "duplicates":
        result = measure_duplicates(a.runs, build_duplicate_tree(a.tree))
    elif a.part == "rule":
        result = measure_rule(a.trees, a.threshold, a.input_size)
    elif a.part == "similar":
        result = measure_similar(a.runs, fashion_pool(a.pool))
    else:
        result = measure_k(a.runs, fashion_pool(a.pool), a.draws)
        print(summary(result))
    print(f"{time.perf_counter() - t0:.0f} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
