"""The measurements behind pred.py's answers about one's own collection (docs/results.md, "Your own collection").

    python tools/collection_measure.py duplicates --runs pixels exp/dup_random exp/fashion_mnist_small
    python tools/collection_measure.py rule --trees bench/photos_tree_duplicates
    python tools/collection_measure.py k --runs exp/fashion_mnist_small exp/fm_random --draws 3
    python tools/collection_measure.py similar --runs pixels exp/fashion_mnist_small exp/fm_random
    python tools/collection_measure.py kwide --runs RUN_TRAINED RUN_RANDOM --draws 2
    python tools/collection_measure.py textures
    python tools/collection_measure.py confirm --trees bench/textures_duplicates bench/photos_tree_duplicates
    python tools/collection_measure.py rule --trees bench/photos_tree_duplicates bench/textures_duplicates bench/textures_sizes
    python tools/collection_measure.py small --runs RUN_TRAINED RUN_RANDOM

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
kwide: the rule that chooses k (pred.py's HDBSCAN count against the silhouette, the eigengap, prediction strength
    and variants) on textures of 4/6/8 kinds, imbalanced textures, Fashion-MNIST 3/5/10 classes x 40 of the
    training file and crops of 6/8 photographs, through each run's network (features kept in
    bench/k_features_cache/); prints a markdown table.
textures: the texture trees with planted copies (bench/textures_duplicates/: two pictures of one kind are the hard
    negatives) and of pictures kept at 12 sizes beside cropped copies (bench/textures_sizes/).
confirm: collection.confirm_scores on every original-copy pair and every candidate pair of different pictures.
rule: as above, before (signatures only) and now (collection.find_duplicates).
small: the neighbour space of 8-512 images (64 principal directions against the cosine of the features) and the
    rank of a planted lone picture by the outlier score.
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
KINDS = ("resized", "reencoded", "cropped", "recoloured", "all", "cropped_more", "rotated", "brighter")
LIGHT = KINDS[:5]  # near-duplicates by the definition the threshold is chosen for; the others show the limits
TEXTURE_KINDS = ("stripes", "checks", "dots", "gradient", "rings", "diagonal", "blobs", "shapes")
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
    (70% of the side, 2-4% off each side, the colour changes and JPEG quality 50), "cropped_more" (5-10% off each
    side: more than lightly), "rotated" (by 2-4 degrees either way, cropped to the rotated picture's inside) or
    "brighter" (brightness x1.2). Returns (image, JPEG quality)."""
    w, h = img.size
    if kind == "rotated":
        angle = rng.uniform(2, 4) * rng.choice([-1, 1])
        cut = int(np.ceil(np.sin(np.radians(abs(angle))) * max(w, h)))
        return img.rotate(angle, Image.BICUBIC).crop((cut, cut, w - cut, h - cut)), 92
    if kind == "brighter":
        return ImageEnhance.Brightness(img).enhance(1.2), 92
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


def texture(kind, rng, side=96):
    """One synthetic picture of `kind` (TEXTURE_KINDS), its colours, frequency, phase or layout drawn from rng: an
    RGB PIL image side x side. Two pictures of one kind are different pictures of the same look (stripes of
    another phase, two gradients): the hard negatives of the duplicate search."""
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    y, x = np.mgrid[0:side, 0:side] / side
    if kind == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(3, 8) * y + rng.uniform(0, 1)))
    elif kind == "checks":
        f, p = rng.uniform(3, 7), rng.uniform(0, 1, 2)
        t = ((np.floor(f * x + p[0]) + np.floor(f * y + p[1])) % 2).astype(float)
    elif kind == "dots":
        f, p = rng.uniform(4, 8), rng.uniform(0, 1, 2)
        t = (((f * x + p[0]) % 1 - 0.5) ** 2 + ((f * y + p[1]) % 1 - 0.5) ** 2 < 0.08).astype(float)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * x + np.sin(a) * y
        t = (t - t.min()) / (t.max() - t.min())
    elif kind == "rings":
        cx, cy = rng.uniform(0.3, 0.7, 2)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 9) * np.hypot(x - cx, y - cy) + rng.uniform(0, 6.3))
    elif kind == "diagonal":
        t = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * (rng.uniform(3, 7) * (x + y) + rng.uniform(0, 1))))
    elif kind == "blobs":
        small = rng.normal(size=(6, 6))
        t = np.asarray(Image.fromarray(small.astype(np.float32)).resize((side, side), Image.BICUBIC))
        t = (t - t.min()) / (t.max() - t.min())
    else:  # shapes
        img = Image.new("RGB", (side, side), tuple(int(v) for v in c0))
        from PIL import ImageDraw
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, side - 20, 2)
            x1, y1 = x0 + rng.integers(15, side // 2), y0 + rng.integers(15, side // 2)
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
                (int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        return img
    rgb = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    return Image.fromarray(np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8))


def build_texture_tree(out, kinds=TEXTURE_KINDS, per_kind=15, seed=0, copied=1 / 3, counts=None, flat=False):
    """out/<kind>/<kind>_<i>.png (out/<kind>_<i>.png with flat) for per_kind pictures of every kind (counts: one
    number per kind instead) and, with copied > 0, planted copies (every KINDS way) of a seeded share of them as
    <name>~<copy kind>.jpg; out/truth.json as build_duplicate_tree's (source index: the picture's kind). Reused."""
    truth_file = os.path.join(out, "truth.json")
    if os.path.exists(truth_file):
        return out
    rng, truth, g = np.random.default_rng(seed), {}, 0
    for s, kind in enumerate(kinds):
        folder = out if flat else os.path.join(out, kind)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_kind if counts is None else counts[s]):
            img, name = texture(kind, rng), f"{kind}_{i:03d}"
            img.save(os.path.join(folder, f"{name}.png"))
            truth[f"{name}.png"] = [g, s]
            if copied and rng.random() < copied:
                for how in KINDS:
                    copy, quality = planted_copy(img, how, rng)
                    copy.save(os.path.join(folder, f"{name}~{how}.jpg"), quality=quality)
                    truth[f"{name}~{how}.jpg"] = [g, s]
            g += 1
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
    """Per pair (i, j) of images: the copy's kind when one of the two is the original, else "" (a kind followed
    by digits, resized64, counts as the kind)."""
    kind = np.array([n.split("~")[1][:-4].rstrip("0123456789") if "~" in n else "" for n in names])
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
    """pred.py's rule on each tree, before (signatures only: collection.duplicate_pairs) and now
    (collection.find_duplicates: exact keys, the crowd of one image per group, the confirmation): the radius, the
    pairs; with a truth.json also the original-copy pairs found per kind and the false pairs (also counted once per
    two pictures, and how many of those are two pictures of one kind: the same source)."""
    out = {}
    for tree in trees:
        paths, prints = tree_prints(tree, input_size)
        old = collection.duplicate_pairs(prints["signature"], threshold)
        new = collection.find_duplicates(prints, threshold)
        out[tree] = {}
        for rule, ((i, j, _), radius, crowd) in (("signature only", old), ("confirmed", new[:3])):
            r = out[tree][rule] = {"images": len(paths), "radius": radius, "crowd": crowd, "pairs": len(i)}
            if rule == "confirmed":
                r["declined"] = new[3]
            if os.path.exists(os.path.join(tree, "truth.json")):
                names, groups, sources = read_truth(tree, paths)
                picture = np.array([os.path.splitext(n.split("~")[0])[0] for n in names])
                found = np.zeros((len(paths), len(paths)), bool)
                found[i, j] = found[j, i] = True
                _, same, _, (a, b) = pair_table(prints["signature"], groups, np.zeros(len(names), int))
                kinds, hit = pair_kinds(names, a, b), found[a, b]
                r["found"] = {k: float(hit[same & (kinds == k)].mean()) for k in KINDS if (kinds == k).any()}
                false = hit & ~same
                r["false"] = int(false.sum())
                pics = {tuple(sorted(p)) for p in zip(picture[a][false], picture[b][false])}
                r["false_pictures"] = len(pics)
                r["false_one_kind"] = int((false & (sources[a] == sources[b])).sum())
            print(f"{tree} [{rule}]: {r}")
    return out


def several_sizes_tree(out, pictures=30, sizes=12, cropped=20, seed=0):
    """The crowd case: `pictures` texture pictures each kept at `sizes` sizes (48-160 px), and `cropped` other
    pictures each with a lightly cropped copy (3% off each side); truth.json as build_texture_tree's, the sizes
    named <name>~resized<s>.png (kind "resized"), the crops <name>~cropped.jpg. Reused."""
    if os.path.exists(os.path.join(out, "truth.json")):
        return out
    os.makedirs(out, exist_ok=True)
    rng, truth = np.random.default_rng(seed), {}
    for g in range(pictures + cropped):
        img, name = texture(TEXTURE_KINDS[g % len(TEXTURE_KINDS)], rng, 160), f"pic_{g:03d}"
        img.save(os.path.join(out, f"{name}.png"))
        truth[f"{name}.png"] = [g, g]
        if g < pictures:
            for s in np.linspace(48, 150, sizes - 1).astype(int):
                img.resize((s, s), Image.BICUBIC).save(os.path.join(out, f"{name}~resized{s}.png"))
                truth[f"{name}~resized{s}.png"] = [g, g]
        else:
            cut = int(0.03 * 160)
            img.crop((cut, cut, 160 - cut, 160 - cut)).save(os.path.join(out, f"{name}~cropped.jpg"), quality=92)
            truth[f"{name}~cropped.jpg"] = [g, g]
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f)
    return out


def tree_prints(images, input_size=64):
    """(paths, fingerprints stacked: collection.fingerprint of every image decoded as pred.py decodes it for a run
    at input_size, names relative to the truth file)."""
    data = ClusterDataset(images, log=lambda msg: None, decode_side=4 * input_size)
    prints = [collection.fingerprint(data.load(i)) for i in range(len(data))]
    return data.paths, {key: np.stack([p[key] for p in prints]) for key in prints[0]}


def read_truth(tree, paths):
    """(names, groups, source index per image) of a tree with truth.json."""
    with open(os.path.join(tree, "truth.json")) as f:
        truth = json.load(f)
    names = [os.path.basename(p) for p in paths]
    return names, np.array([truth[n][0] for n in names]), np.array([truth[n][1] for n in names])


def measure_confirm(trees, threshold=0.23, input_size=64):
    """On trees with planted copies: every original-copy pair (per copy kind) and every pair of different pictures
    whose signatures lie within `threshold` (the candidates the confirmation must turn down: in brackets how many
    are of one kind, the same source), with collection.confirm_scores' correlation and colour difference: per
    kind the lowest correlation, the highest colour difference and the share confirmed; for the different
    pictures the share confirmed (false pairs)."""
    out = {}
    for tree in trees:
        paths, prints = tree_prints(tree, input_size)
        names, groups, sources = read_truth(tree, paths)
        x = prints["signature"]
        d, same, _, (i, j) = pair_table(x, groups, np.zeros(len(x), int))
        kinds = pair_kinds(names, i, j)
        keep = (same & (kinds != "")) | (~same & (d <= threshold))
        i, j, d, same, kinds = i[keep], j[keep], d[keep], same[keep], kinds[keep]
        corr, colour = collection.confirm_scores(prints["detail"], i, j)
        ok = (corr >= collection.CONFIRM_SIMILARITY) & (colour <= collection.CONFIRM_COLOUR)
        r = out[tree] = {"images": len(paths), "kinds": {}}
        for kind in KINDS:
            m = same & (kinds == kind)
            if m.any():
                r["kinds"][kind] = {"pairs": int(m.sum()), "signature_found": float((d[m] <= threshold).mean()),
                                    "lowest_corr": float(corr[m].min()), "highest_colour": float(colour[m].max()),
                                    "found": float((ok & (d <= threshold))[m].mean())}
        neg = ~same
        r["negatives"] = {"candidates": int(neg.sum()), "one_kind": int((neg & (sources[i] == sources[j])).sum()),
                          "confirmed": int((ok & neg).sum()),
                          "highest_corr": float(corr[neg].max()) if neg.any() else None,
                          "corr": corr[neg].round(4).tolist(), "colour": colour[neg].round(4).tolist(),
                          "examples": sorted({tuple(sorted((names[a], names[b]))) for a, b in
                                              zip(i[ok & neg], j[ok & neg])})[:10]}
        r["copies"] = {kind: {"corr": corr[same & (kinds == kind)].round(4).tolist(),
                              "colour": colour[same & (kinds == kind)].round(4).tolist()} for kind in KINDS}
        print(tree, {k: v for k, v in r["kinds"].items()})
        print("  negatives", {k: v for k, v in r["negatives"].items() if k not in ("corr", "colour")})
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


def photo_scenes(out, n_scenes, per_scene=9, seed=0):
    """out/<scene>/<i>.jpg: per_scene random crops (40-60% of the side) of each of n_scenes photographs of
    source_pictures' collection (whole photographs, before tiling): one kind per photograph. Reused."""
    if os.path.isdir(out):
        return out
    rng = np.random.default_rng(seed)
    photos = sorted(f for pattern in PHOTOS for f in glob.glob(os.path.join(WALLPAPERS, pattern)))
    photos += [plasma_file(name) for name in PLASMA_PHOTOS]
    for s in rng.choice(len(photos), n_scenes, replace=False):
        with Image.open(photos[s]) as img:
            img.draft("RGB", (img.width // 4, img.height // 4))
            img = img.convert("RGB")
        folder = os.path.join(out, os.path.splitext(os.path.basename(photos[s]))[0] + f"_{s}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_scene):
            f = rng.uniform(0.4, 0.6)
            w, h = int(img.width * f), int(img.height * f)
            x0, y0 = rng.integers(0, img.width - w), rng.integers(0, img.height - h)
            img.crop((x0, y0, x0 + w, y0 + h)).resize((128, 128 * h // w)).save(os.path.join(folder, f"{i}.jpg"))
    return out


K_RULES = ("silhouette", "eigengap", "prediction_strength", "hdbscan5", "hdbscan10", "hdbscan_n25",
           "hdbscan10_white", "median3")


def eigengap_k(x, ks, neighbours=10):
    """The k of ks after which the normalised Laplacian of the symmetric kNN graph (x's rows, `neighbours` each)
    has its largest eigengap (von Luxburg 2007)."""
    from scipy.sparse.csgraph import laplacian
    from sklearn.neighbors import kneighbors_graph
    g = kneighbors_graph(x, min(neighbours, len(x) - 1), include_self=False)
    g = ((g + g.T) > 0).astype(np.float64)
    values = np.linalg.eigvalsh(laplacian(g, normed=True).toarray())
    return max(ks, key=lambda k: (values[k] - values[k - 1], -k))


def prediction_strength_k(x, ks, seed=0, cut=0.8):
    """The largest k of ks whose prediction strength (Tibshirani and Walther 2005: k-means of one random half,
    its centroids assign the other half; the smallest share, over the other half's own k-means clusters, of pairs
    of one cluster that the centroids put together) is at least `cut`; the smallest k when none."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    a, b = x[order[:len(x) // 2]], x[order[len(x) // 2:]]
    best = min(ks)
    for k in ks:
        if k > len(b) // 2:
            break
        _, ca, _ = clustering.run_kmeans(a, k, 20, seed=seed, nredo=1)
        own, _, _ = clustering.run_kmeans(b, k, 20, seed=seed + 1, nredo=1)
        by_a = ((b[:, None] - ca[None]) ** 2).sum(-1).argmin(1)
        strength = 1.0
        for c in np.unique(own):
            m = by_a[own == c]
            if len(m) < 2:
                continue
            counts = np.bincount(m)
            strength = min(strength, float((counts * (counts - 1)).sum() / (len(m) * (len(m) - 1))))
        if strength >= cut:
            best = k
    return best


def hdbscan_k(x, min_size):
    """HDBSCAN's number of clusters (scikit-learn, min_cluster_size min_size; noise is no cluster)."""
    from sklearn.cluster import HDBSCAN
    labels = HDBSCAN(min_cluster_size=min(min_size, len(x) - 1), copy=True).fit(x).labels_
    return int(len(set(labels.tolist()) - {-1}))


def k_rules(features, pca_dim, seed=0):
    """{rule: chosen k} of K_RULES for one set of fc7 features, as pred.py would see it: the whitened rows
    (k-means), the neighbour space (collection.fit_neighbour_space, cosine of the features up to
    collection.NEIGHBOUR_COSINE_MAX images) for the silhouette, the eigengap and HDBSCAN."""
    xb = clustering.to_numpy(clustering.preprocess_features(features, pca_dim, seed=seed)[0])
    space = collection.fit_neighbour_space(features, seed=seed, cosine_max=collection.NEIGHBOUR_COSINE_MAX)
    nb = clustering.to_numpy(collection.neighbour_rows(features, space))
    ks = collection.k_candidates(len(features), 2, 50)
    scores, _ = collection.k_scores(xb, ks, ("silhouette",), seed=seed, scored=nb)
    clamp = lambda k: min(max(k, ks[0]), ks[-1])  # noqa: E731  (HDBSCAN may find no cluster: the range's smallest)
    out = {"silhouette": collection.best_k(scores["silhouette"], "silhouette"),
           "eigengap": eigengap_k(nb, ks), "prediction_strength": prediction_strength_k(xb, ks, seed),
           "hdbscan5": clamp(hdbscan_k(nb, 5)), "hdbscan10": clamp(hdbscan_k(nb, 10)),
           "hdbscan_n25": clamp(hdbscan_k(nb, max(5, len(nb) // 25))), "hdbscan10_white": clamp(hdbscan_k(xb, 10))}
    out["median3"] = int(np.median([out["silhouette"], out["eigengap"], out["hdbscan10"]]))
    top = sorted(scores["silhouette"], key=lambda k: -scores["silhouette"][k])
    out["silhouette_runner_up"] = top[1] if len(top) > 1 else top[0]
    return out


def measure_k_wide(runs, pool, draws=2, seed=0):
    """{run: [{set, true_k, n, chosen: {rule: k}}]}: textures (4, 6, 8 kinds x 15), imbalanced textures (5 kinds,
    one 5x), Fashion-MNIST training images (3, 5, 10 classes x 40, `draws` draws), photographs (6 and 8 scenes x 9
    crops), through each run's network."""
    sets = []
    for r in range(draws):
        for kinds in (4, 6, 8):
            sets.append((f"textures {kinds} kinds", kinds, build_texture_tree(
                os.path.join(ROOT, "bench", f"k_textures_{kinds}_{r}"), TEXTURE_KINDS[:kinds] if r == 0 else
                tuple(np.random.default_rng(r).choice(TEXTURE_KINDS, kinds, replace=False)), 15, seed=r, copied=0)))
        sets.append(("textures imbalanced (5 kinds, one 5x)", 5, build_texture_tree(
            os.path.join(ROOT, "bench", f"k_imbalanced_{r}"), TEXTURE_KINDS[r:r + 5], seed=r, copied=0,
            counts=[75, 15, 15, 15, 15])))
    for r in range(draws):
        for scenes in (6, 8):
            sets.append((f"photographs {scenes} scenes", scenes, photo_scenes(
                os.path.join(ROOT, "bench", f"k_photos_{scenes}" + f"_{r}" * (r > 0)), scenes, seed=r + (scenes == 8))))
    results = {}
    cache = os.path.join(ROOT, "bench", "k_features_cache")
    os.makedirs(cache, exist_ok=True)

    def features_of(run, tree):
        """run_features, kept in bench/k_features_cache (the rules are re-scored without the network pass)."""
        name = os.path.join(cache, (run.strip("/") + "|" + tree).replace("/", "_") + ".npz")
        if os.path.exists(name):
            f = np.load(name, allow_pickle=True)
            return list(f["paths"]), f["features"], {"pca_dim": int(f["pca_dim"])}
        paths, features, c = run_features(run, tree)
        np.savez(name, paths=np.array(paths), features=features, pca_dim=c["pca_dim"])
        return paths, features, c

    for run in runs:
        results[run] = rows = []
        paths, features, c = features_of(run, pool)
        labels = np.unique([os.path.basename(os.path.dirname(p)) for p in paths], return_inverse=True)[1]
        for r, (k, idx) in enumerate(fashion_subsets(labels, draws, per_class=40, sizes=(3, 5, 10), seed=seed)):
            rows.append({"set": f"Fashion-MNIST {k} classes x 40", "true_k": k, "n": len(idx),
                         "chosen": k_rules(features[idx], c["pca_dim"], seed + r)})
            print(run, rows[-1])
        for name, k, tree in sets:
            _, features, c = features_of(run, tree)
            rows.append({"set": name, "true_k": k, "n": len(features), "chosen": k_rules(features, c["pca_dim"], seed)})
            print(run, rows[-1])
    return results


def k_wide_summary(results):
    """Markdown: per set kind and run, each rule's chosen k per draw; then per rule the sets it got right within 1."""
    lines, hits = [], {}
    rules = K_RULES + ("silhouette_runner_up",)
    lines.append("| set | true k | network | n | " + " | ".join(rules) + " |")
    lines.append("|---" * (4 + len(rules)) + "|")
    for run, rows in results.items():
        by = {}
        for r in rows:
            by.setdefault((r["set"], r["true_k"]), []).append(r)
        for (name, k), these in by.items():
            cells = []
            for rule in rules:
                chosen = [r["chosen"][rule] for r in these]
                close = sum(abs(c - k) <= 1 for c in chosen)
                hits.setdefault(rule, [0, 0])
                hits[rule][0] += close
                hits[rule][1] += len(chosen)
                cells.append(" / ".join(str(c) for c in chosen) + f" ({close}/{len(chosen)})")
            net = os.path.basename(run.rstrip("/"))
            lines.append(f"| {name} | {k} | {net} | {these[0]['n']} | " + " | ".join(cells) + " |")
    totals = " | ".join(f"**{hits[r][0]}/{hits[r][1]}**" for r in rules)
    lines.append(f"| **within 1, all sets** | | | | {totals} |")
    return "\n".join(lines)


def cached_pool(run, pool):
    """The pool's features of a run from bench/k_features_cache (kwide writes them), else run_features."""
    name = os.path.join(ROOT, "bench", "k_features_cache", (run.strip("/") + "|" + pool).replace("/", "_") + ".npz")
    if os.path.exists(name):
        f = np.load(name, allow_pickle=True)
        return list(f["paths"]), f["features"]
    paths, features, _ = run_features(run, pool)
    return paths, features


def measure_small(runs, pool, draws=20, seed=0, sizes=(8, 16, 32, 48, 64, 128, 256, 512)):
    """Small sets: for n images of Fashion-MNIST (n / 4 of each of 4 classes), the share of each image's 3 nearest
    others of its class in the old neighbour space (64 principal directions) and in the cosine of the features; and
    a lone picture (one image of a fifth class among n - 1 of one class): its rank by the old outlier score (the
    5th nearest in the principal directions) and by pred.py's (collection.NEIGHBOUR_COSINE_MAX)."""
    rng, out = np.random.default_rng(seed), {}
    for run in runs:
        paths, features = cached_pool(run, pool)
        labels = np.unique([os.path.basename(os.path.dirname(p)) for p in paths], return_inverse=True)[1]
        out[run] = {}
        for n in sizes:
            prec = {"pca64": [], "cosine": []}
            ranks = {"pca64": [], "cosine": [], "pred": []}
            for _ in range(draws):
                classes = rng.choice(10, 5, replace=False)
                rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 4, replace=False)
                                       for c in classes[:4]])
                x = features[rows]
                spaces = {"pca64": collection.fit_neighbour_space(x, seed=seed),
                          "cosine": {"cosine": True}}
                for name, space in spaces.items():
                    _, ids, _ = collection.self_neighbours(collection.neighbour_rows(x, space), 3)
                    prec[name].append(float((labels[rows][ids] == labels[rows][:, None]).mean()))
                if n - 1 > (labels == classes[0]).sum():
                    continue
                lone = np.concatenate([rng.choice(np.flatnonzero(labels == classes[0]), n - 1, replace=False),
                                       rng.choice(np.flatnonzero(labels == classes[4]), 1)])
                x = features[lone]
                for name, space in (("pca64", collection.fit_neighbour_space(x, seed=seed)),
                                    ("cosine", {"cosine": True}),
                                    ("pred", collection.fit_neighbour_space(
                                        x, seed=seed, cosine_max=collection.NEIGHBOUR_COSINE_MAX))):
                    dist, ids, _ = collection.self_neighbours(collection.neighbour_rows(x, space), 5)
                    score = collection.outlier_scores(dist)
                    ranks[name].append(int((score > score[-1]).sum()) + 1)
            out[run][n] = {"precision3": {k: float(np.mean(v)) for k, v in prec.items()},
                           "lone_rank_median": {k: float(np.median(v)) for k, v in ranks.items() if v},
                           "lone_top3": {k: float(np.mean(np.array(v) <= 3)) for k, v in ranks.items() if v}}
            print(run, n, out[run][n])
    return out


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
    p.add_argument("part", choices=("duplicates", "rule", "confirm", "k", "kwide", "small", "similar", "tree",
                                    "textures"))
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
    if a.part == "textures":
        print(build_texture_tree(os.path.join(ROOT, "bench", "textures_duplicates")))
        print(several_sizes_tree(os.path.join(ROOT, "bench", "textures_sizes")))
        return
    if a.part == "confirm":
        result = measure_confirm(a.trees, a.threshold, a.input_size)
    elif a.part == "duplicates":
        result = measure_duplicates(a.runs, build_duplicate_tree(a.tree))
    elif a.part == "rule":
        result = measure_rule(a.trees, a.threshold, a.input_size)
    elif a.part == "kwide":
        result = measure_k_wide(a.runs, fashion_pool(a.pool), a.draws)
        print(k_wide_summary(result))
    elif a.part == "small":
        result = measure_small(a.runs, fashion_pool(a.pool))
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
