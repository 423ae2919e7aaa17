"""What one asks of one's own collection after "which cluster is each image in": how many kinds of picture are
there (k chosen without labels), which images are the same picture twice (near-duplicates), which images look
like this one (similar images), and which look like no other (outliers). answers() asks them all at once for
pred.py, which writes them out; report.py draws them on the page. The math is here, as plain functions on
embeddings (numpy arrays or tensors).

Three spaces are used, each of L2-normalised rows, so every distance is a squared L2 distance between unit vectors
(0 = the same direction, 2 = orthogonal, 4 = opposite):
  the clustering space   the PCA-whitened, normalised embeddings the clusters are made of; the k-means of the k
                         curve run there;
  the neighbour space    the fc7 features projected on their top NEIGHBOUR_DIMS principal directions (centred, not
                         whitened), then normalised; up to NEIGHBOUR_COSINE_MAX images the normalised features
                         themselves (their cosine); k (HDBSCAN's number of clusters), similar images and outlier
                         scores are found there;
  the pixel space        each image's pixel_signature (the low frequencies of its gray image); near-duplicate
                         candidates are found there, exact copies by a hash of the decoded pixels, and every
                         candidate pair is confirmed on the two images reduced to DETAIL_SIDE pixels
                         (confirm_scores): the network's features told planted copies of photographs from other
                         photographs far worse (a Sobel network does not see colour or smooth gradients).
Why these (and the criterion, the threshold): docs/results.md, "Your own collection".
"""
import csv
import hashlib
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

import clustering
import metrics
from clustering.common import rows_per_chunk, to_numpy, to_tensor
from errors import counted, printable

K_CRITERIA = ("silhouette", "davies_bouldin", "calinski_harabasz", "stability")
K_CRITERION = "silhouette"  # the curve shown beside the chosen k, computed in the neighbour space (docs/results.md)
K_RULE = "hdbscan"  # the chosen k: HDBSCAN's number of clusters in the neighbour space (docs/results.md) ...
K_MIN_CLUSTER = 10  # ... with clusters of at least 10 images (min_cluster_size)
K_SAMPLE = 3000  # rows that the k-means of every k uses (a seeded random subset above) ...
K_SCORED = 1000  # ... and the first this many of them, the rows its score is computed on (silhouette: O(rows^2))
K_PER_CLUSTER = 5  # the largest k tried is at most n_images / K_PER_CLUSTER
NEIGHBOUR_DIMS = 64  # principal directions of the neighbour space (at most n_images - 1)
NEIGHBOUR_FIT = 5000  # rows the neighbour space's PCA is fitted on (a seeded random subset above)
OUTLIER_NEIGHBOUR = 5  # outlier_score: squared distance to the image's 5th nearest other image
MAX_PAIRS = 1_000_000  # duplicates.csv keeps at most this many pairs (the closest)
DUPLICATE_CROWD = 10  # a near-duplicate pair must stand out from the images' usual 10th nearest neighbour ...
DUPLICATE_RATIO = 0.25  # ... by being at most this fraction of its median distance (above 2 x 10 images)
SIGNATURE_SIDE = 32  # pixel_signature: the gray image reduced to 32 x 32 pixels
SIGNATURE_FREQUENCIES = 8  # ... and its 8 x 8 lowest DCT frequencies, the constant term left out: 63 numbers
DUPLICATE_SAME = 0.015  # the crowd's bound: neighbours this close count as copies, not as the crowd (one row per group)
DUPLICATE_SEEN = 40  # ... among each image's 40 nearest (the 10th nearest beyond them, or the 40th)
DETAIL_SIDE = 32  # the confirmation of a candidate pair: the two images reduced to 32 x 32 RGB pixels ...
DETAIL_SHIFT = 1  # ... compared at every shift of up to 1 pixel (a light crop moves the picture) ...
DETAIL_ZOOM = 1  # ... and each zoomed in by 1 pixel a side (a light crop also rescales it) ...
CONFIRM_SIMILARITY = 0.95  # ... pairs whose best correlation of the gray pixels is below this are different pictures ...
CONFIRM_COLOUR = 0.7  # ... and so are pairs whose colour fields' cosine is below this ...
CONFIRM_CHROMA = 0.03  # ... where both images have colour (RMS of RGB minus gray, 0-1, at least this)
NEIGHBOUR_COSINE_MAX = 256  # up to this many images the neighbour space is the cosine of the features (measured to 256)
OUTLIER_SKIP = 20  # outlier_score looks this many neighbours beyond the 5th for images that are not copies


# ---------------------------------------------------------------- k chosen without labels

def k_candidates(n, low, high):
    """The k tried for n images: low .. min(high, n // K_PER_CLUSTER), and never above n - 1 (a partition score
    needs a cluster with two images); at least [low] when the cap falls below low. Raises ValueError under 3
    images or for low < 2."""
    if n < 3:
        raise ValueError(f"choosing k needs at least 3 images, got {n}")
    if low < 2 or high < low:
        raise ValueError(f"the k range must satisfy 2 <= low <= high, got {low}..{high}")
    top = min(high, n // K_PER_CLUSTER, n - 1)
    return list(range(min(low, n - 1), max(min(low, n - 1), top) + 1))


def partition_score(x, ids, criterion, again=None):
    """A label-free score of the partition `ids` ((n,) int) of the rows of x ((n, d) float numpy), NaN where it is
    undefined (fewer than 2 or as many clusters as rows): "silhouette" (Rousseeuw 1987; higher is better),
    "davies_bouldin" (Davies and Bouldin 1979; lower is better), "calinski_harabasz" (Calinski and Harabasz 1974;
    higher is better), from scikit-learn on Euclidean distances; "stability": the adjusted
    Rand index between ids and `again`, a second k-means of the same rows from other random starts (higher is
    better; Ben-Hur et al. 2002 use subsamples, this uses starts)."""
    from sklearn import metrics as sk
    if criterion == "stability":
        return metrics.ari(ids, again)
    if not 2 <= len(np.unique(ids)) <= len(x) - 1:
        return float("nan")
    score = {"silhouette": sk.silhouette_score, "davies_bouldin": sk.davies_bouldin_score,
             "calinski_harabasz": sk.calinski_harabasz_score}[criterion]
    return float(score(x, ids))


def best_k(scores, criterion):
    """The k (int) of the best finite score of {k: score}: the lowest for davies_bouldin, else the highest; ties
    and an all-NaN curve go to the smallest k."""
    finite = {k: s for k, s in scores.items() if np.isfinite(s)}
    if not finite:
        return min(scores)
    sign = 1 if criterion == "davies_bouldin" else -1
    return min(finite, key=lambda k: (sign * finite[k], k))


def k_scores(xb, ks, criteria=(K_CRITERION,), niter=20, seed=0, device=None, sample=(K_SAMPLE, K_SCORED),
             scored=None):
    """{criterion: {k: score}} of a k-means partition for every k of ks, on the rows of xb ((n, d) whitened,
    normalised embeddings, numpy or a tensor): the k-means (one start, niter iterations, clustering.run_kmeans on
    `device`) partitions at most sample[0] of them (a seeded random subset), and the score is computed on the
    first sample[1] of those (in random order). scored: other rows of the same images ((n, d') numpy) to compute
    the score on instead of xb. Returns also (rows clustered, rows scored)."""
    n = len(xb)
    rows = np.random.default_rng(seed).permutation(n)[:sample[0]]
    xs = to_numpy(xb, np.float32)[rows]
    on = (xs if scored is None else np.asarray(scored, dtype=np.float32)[rows])[:sample[1]]
    out = {c: {} for c in criteria}
    for k in ks:
        ids, _, _ = clustering.run_kmeans(xs, k, niter, seed=seed, nredo=1, device=device)
        again = None
        if "stability" in criteria:
            again, _, _ = clustering.run_kmeans(xs, k, niter, seed=seed + 7919, nredo=1, device=device)
        for c in criteria:
            out[c][k] = partition_score(on, ids[:len(on)], c, None if again is None else again[:len(on)])
    return out, (len(rows), len(on))


def hdbscan_count(x, min_cluster=K_MIN_CLUSTER):
    """HDBSCAN's number of clusters (Campello, Moulavi and Sander 2013; scikit-learn's sklearn.cluster.HDBSCAN,
    min_cluster_size min_cluster, at most n - 1) of the rows of x ((n, d) float numpy); images it calls noise form
    no cluster. int, 0 when it finds none."""
    from sklearn.cluster import HDBSCAN
    if len(x) < 3:
        return 0
    labels = HDBSCAN(min_cluster_size=max(2, min(min_cluster, len(x) - 1)), copy=True).fit(x).labels_
    return int(len(set(labels.tolist()) - {-1}))


def choose_k(xb, ks, criterion=K_CRITERION, niter=20, seed=0, device=None, sample=(K_SAMPLE, K_SCORED),
             scored=None):
    """(the chosen k, metrics.json's k_selection: {"rule": K_RULE, "hdbscan_clusters" (HDBSCAN's count before it is
    clamped into ks), "chosen", "runner_up" (the k of ks, other than the chosen one, of the best `criterion`),
    "criterion", "scores": {"k": score} (the curve the page draws), "rows" (clustered per k), "rows_scored"}).
    The chosen k is HDBSCAN's number of clusters (hdbscan_count) of the scored rows (the neighbour space; xb
    without them) of the same seeded random subset the k-means use, clamped into ks; `criterion` scores the
    k-means partition of every k of ks (k_scores, best_k)."""
    scores, (used, on) = k_scores(xb, ks, (criterion,), niter, seed, device, sample, scored)
    rows = np.random.default_rng(seed).permutation(len(xb))[:sample[0]]
    space = to_numpy(xb, np.float32) if scored is None else np.asarray(scored, dtype=np.float32)
    found = hdbscan_count(space[rows])
    chosen = min(max(found, ks[0]), ks[-1])
    others = {k: s for k, s in scores[criterion].items() if k != chosen}
    runner_up = best_k(others, criterion) if others else chosen
    curve = {str(k): (round(float(s), 6) if np.isfinite(s) else None) for k, s in scores[criterion].items()}
    return chosen, {"rule": K_RULE, "hdbscan_clusters": int(found), "chosen": int(chosen),
                    "runner_up": int(runner_up), "criterion": criterion, "scores": curve, "rows": int(used),
                    "rows_scored": int(on)}


# ---------------------------------------------------------------- the pixel space

def dct_matrix(n):
    """The orthonormal DCT-II matrix (n, n) float64: row u is sqrt(2 / n) cos(pi (2 x + 1) u / 2n), row 0 1 / sqrt(n)."""
    x, u = np.meshgrid(np.arange(n), np.arange(n))
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * u / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m


DCT = dct_matrix(SIGNATURE_SIDE)[:SIGNATURE_FREQUENCIES]


def pixel_signature(image):
    """The near-duplicate signature of a decoded image (a PIL image, or a uint8 C x H x W tensor): its gray image
    reduced to SIGNATURE_SIDE x SIGNATURE_SIDE pixels by a box filter, the SIGNATURE_FREQUENCIES x
    SIGNATURE_FREQUENCIES lowest frequencies of its 2-D DCT-II without the constant one (pHash's block; Zauner 2010,
    "Implementation and benchmarking of perceptual image hash functions", kept as numbers, not bits), L2-normalised:
    ((SIGNATURE_FREQUENCIES ** 2 - 1,) float32; zeros for an image of one colour). Brightness does not change it
    (the constant term is left out), nor contrast (the norm), nor the size of the image."""
    img = F.to_pil_image(image) if torch.is_tensor(image) else image
    gray = np.asarray(img.convert("L").resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.BOX), dtype=np.float64)
    low = (DCT @ gray @ DCT.T).ravel()[1:]
    norm = np.linalg.norm(low)
    return (low / norm if norm > 1e-9 * SIGNATURE_SIDE ** 2 else np.zeros_like(low)).astype(np.float32)


def fingerprint(image):
    """What the duplicate search keeps of one decoded image (a PIL image, or a uint8 C x H x W tensor), as a dict of
    numpy arrays: "signature" (pixel_signature, (63,) float32), "key" ((1,) int64: a 64-bit BLAKE2 hash of the
    decoded RGB pixels and the size, equal for exact copies), "detail" ((DETAIL_SIDE * DETAIL_SIDE * 3,) uint8: the
    RGB image reduced to DETAIL_SIDE x DETAIL_SIDE by a box filter, for confirm_pairs) and "stand_in" ((1,) bool:
    the black stand-in ClusterDataset.load gives for a file that does not decode; never paired)."""
    img = F.to_pil_image(image) if torch.is_tensor(image) else image
    stand_in = bool(getattr(img, "info", {}).get("stand_in", False))
    rgb = img.convert("RGB")
    digest = hashlib.blake2b(np.asarray(rgb).tobytes() + repr(rgb.size).encode(), digest_size=8).digest()
    return {"signature": pixel_signature(rgb), "key": np.frombuffer(digest, np.int64).copy(),
            "detail": np.array(rgb.resize((DETAIL_SIDE, DETAIL_SIDE), Image.BOX), np.uint8).reshape(-1),
            "stand_in": np.array([stand_in])}


def _best_correlation(ga, gb, s):
    """(p,) the best Pearson correlation of the gray images ga and gb ((p, side, side) float tensors) over the shifts
    of gb by up to s pixels (the centre of ga against the shifted window of gb); -1 where either is flat."""
    side = ga.shape[1]
    centre = ga[:, s:side - s, s:side - s]
    centre = centre - centre.mean((1, 2), keepdim=True)
    na = centre.pow(2).sum((1, 2)).sqrt()
    best = torch.full((len(ga),), -1.0)
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            other = gb[:, s + dy:side - s + dy, s + dx:side - s + dx]
            other = other - other.mean((1, 2), keepdim=True)
            nb = other.pow(2).sum((1, 2)).sqrt()
            corr = (centre * other).sum((1, 2)) / (na * nb).clamp(min=1e-12)
            best = torch.maximum(best, torch.where((na < 1e-3) | (nb < 1e-3), -1.0, corr))
    return best


def _zoomed(g, cut):
    """The gray images g ((p, side, side)) with `cut` pixels cropped off every side, resized back (bilinear)."""
    side = g.shape[1]
    return torch.nn.functional.interpolate(g[:, None, cut:side - cut, cut:side - cut], size=(side, side),
                                           mode="bilinear", align_corners=False)[:, 0]


def confirm_scores(detail, i, j, chunk=2048, shift=None):
    """For each candidate pair (rows i[p], j[p] of detail, fingerprint's (n, DETAIL_SIDE^2 * 3) uint8): (the best
    Pearson correlation of the two gray images over the shifts of up to DETAIL_SHIFT pixels, each image also
    compared zoomed in by DETAIL_ZOOM pixels a side (a light crop rescales the picture), (p,) float32, 1 for two
    images of one flat colour each and 0 for a flat one beside one that is not; the cosine of their colour fields
    (each pixel's RGB minus its gray, on 0-1), (p,) float32, 1 where either image has almost no colour (RMS below
    CONFIRM_CHROMA)). Brightness, contrast and saturation change neither much, and a copy resized, re-encoded or
    lightly cropped keeps both near 1; two pictures of one kind (stripes of another phase: the first, two gradients
    of other colours: the second) do not (docs/results.md)."""
    s, side = DETAIL_SHIFT if shift is None else shift, DETAIL_SIDE
    corr, chroma = np.zeros(len(i), np.float32), np.zeros(len(i), np.float32)
    weights = torch.tensor([0.299, 0.587, 0.114])
    for start in range(0, len(i), chunk):
        a = torch.from_numpy(detail[i[start:start + chunk]]).float().view(-1, side, side, 3) / 255
        b = torch.from_numpy(detail[j[start:start + chunk]]).float().view(-1, side, side, 3) / 255
        ga, gb = a @ weights, b @ weights
        ca, cb = (a - ga[..., None]).flatten(1), (b - gb[..., None]).flatten(1)
        na, nb = ca.norm(dim=1), cb.norm(dim=1)
        cos = (ca * cb).sum(1) / (na * nb).clamp(min=1e-12)
        faint = torch.minimum(na, nb) < CONFIRM_CHROMA * side
        chroma[start:start + chunk] = torch.where(faint, torch.ones_like(cos), cos).numpy()
        best = _best_correlation(ga, gb, s)
        if DETAIL_ZOOM:
            best = torch.maximum(best, _best_correlation(ga, _zoomed(gb, DETAIL_ZOOM), s))
            best = torch.maximum(best, _best_correlation(_zoomed(ga, DETAIL_ZOOM), gb, s))
        flat_a = ga.flatten(1).std(1) < 1e-3 / side
        flat_b = gb.flatten(1).std(1) < 1e-3 / side
        best = torch.where(flat_a & flat_b, torch.ones_like(best), torch.where(flat_a | flat_b, 0.0, best))
        corr[start:start + chunk] = best.numpy()
    return corr, chroma


def confirmed(detail, i, j):
    """(p,) bool: the candidate pairs (i, j) that confirm_scores keeps as copies of one picture (gray correlation
    at least CONFIRM_SIMILARITY and colour cosine at least CONFIRM_COLOUR)."""
    corr, chroma = confirm_scores(detail, i, j)
    return (corr >= CONFIRM_SIMILARITY) & (chroma >= CONFIRM_COLOUR)


def exact_pairs(keys, rows):
    """(i, j) arrays, i < j, of the rows (indices into keys, (n,) int64) whose keys are equal: every pair of every
    group of exact copies (a group of more than about 1,400, whose pairs would pass MAX_PAIRS: each image with the
    group's first, with a warning)."""
    rows = np.asarray(rows, np.int64)
    order = rows[np.argsort(keys[rows], kind="stable")]
    cuts = np.flatnonzero(np.diff(keys[order])) + 1
    i, j = [], []
    for group in np.split(order, cuts):
        if len(group) > 1:
            g = np.sort(group)
            if len(g) * (len(g) - 1) // 2 > MAX_PAIRS:  # thousands of one picture: each with the first, no n^2 list
                warnings.warn(f"{len(g):,} images have the same pixels; duplicates.csv pairs each with the first")
                i.append(np.full(len(g) - 1, g[0]))
                j.append(g[1:])
                continue
            a, b = np.triu_indices(len(g), 1)
            i.append(g[a])
            j.append(g[b])
    if not i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(i), np.concatenate(j)


def crowd_distance(signatures, device=None):
    """The crowd's usual distance: the median, over one image of every group of copies, of an image's distance to
    its DUPLICATE_CROWD-th nearest other image that is not a copy of it (copies: neighbours within DUPLICATE_SAME,
    joined into groups), looked for among its DUPLICATE_SEEN nearest (the farthest of them when fewer are not
    copies). Pictures kept at several sizes neither count several times nor stand in for the crowd. float."""
    dist, ids, _ = self_neighbours(signatures, DUPLICATE_SEEN, 0, device)
    n = len(dist)
    close = dist <= DUPLICATE_SAME
    rows = np.repeat(np.arange(n), dist.shape[1])[close.ravel()]
    _, group = duplicate_groups((rows, ids[close], None), n)
    far = np.where(close, np.inf, dist)
    far.sort(1)
    counted = (~close).sum(1)
    pick = np.minimum(DUPLICATE_CROWD, np.maximum(counted, 1)) - 1
    crowd = np.where(counted > 0, far[np.arange(n), pick], dist[:, -1])
    alone = group < 0
    _, first = np.unique(group[~alone], return_index=True)
    one_per_group = np.concatenate([np.flatnonzero(alone), np.flatnonzero(~alone)[first]])
    return float(np.median(crowd[one_per_group]))


def find_duplicates(prints, threshold, device=None):
    """The near-duplicate pairs of the images whose fingerprints are `prints` (fingerprint's dict, stacked: arrays
    with one row per image): every pair of exact copies (equal keys) at distance 0, whatever the threshold; and
    the pairs whose pixel signatures are within the radius min(threshold, DUPLICATE_RATIO x crowd_distance) (the
    second bound only above 2 x DUPLICATE_CROWD images) that confirm_scores confirms, at their squared signature
    distance. Stand-ins of files that do not decode are never paired. Returns (pairs: (i, j, distance) arrays,
    i < j, closest first, at most MAX_PAIRS; the radius; the crowd distance or None; the number of candidate pairs
    the confirmation turned down)."""
    n = len(prints["signature"])
    rows = np.flatnonzero(~prints["stand_in"].reshape(n).astype(bool))
    keys = prints["key"].reshape(n)
    ei, ej = exact_pairs(keys, rows)
    sig = prints["signature"][rows]
    crowd = crowd_distance(sig, device) if len(rows) > 2 * DUPLICATE_CROWD else None
    radius = threshold if crowd is None else min(threshold, DUPLICATE_RATIO * crowd)
    if len(rows) > 1 and radius > 0:
        i, j, d = self_neighbours(sig, 0, radius, device)[2]
        i, j = rows[i], rows[j]
    else:
        i, j, d = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    near = keys[i] != keys[j]
    i, j, d = i[near], j[near], d[near]
    keep = confirmed(prints["detail"], i, j) if len(i) else np.zeros(0, bool)
    pairs = closest_pairs([(ei, ej, np.zeros(len(ei), np.float32)), (i[keep], j[keep], d[keep])], MAX_PAIRS)
    return pairs, radius, crowd, int((~keep).sum())


def duplicates_across(new, old, radius, same=None, device=None):
    """The images of `new` that are near-duplicates of images of `old` (both fingerprint dicts stacked): pairs (new
    row, old row, distance) of equal keys (distance 0) or signatures within `radius` that confirm_scores confirms,
    every new image's pairs (at most DUPLICATE_SEEN candidates each), closest first. same: (p, 2) pairs of (new row,
    old row) that are one file, left out. Stand-ins never pair."""
    from clustering.nearest import nearest_rows
    n_new, n_old = len(new["signature"]), len(old["signature"])
    if n_new == 0 or n_old == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    dev = device or "cpu"
    m = min(DUPLICATE_SEEN, n_old)
    d, ids = nearest_rows(to_tensor(new["signature"], dev), to_tensor(old["signature"], dev), m)
    d, ids = to_numpy(d).clip(min=0), to_numpy(ids)
    i = np.repeat(np.arange(n_new), m)
    j, d = ids.ravel(), d.ravel()
    k_new, k_old = new["key"].reshape(-1), old["key"].reshape(-1)
    exact = k_new[i] == k_old[j]
    d = np.where(exact, 0.0, d).astype(np.float32)
    cand = exact | (d <= radius)
    cand &= ~new["stand_in"].reshape(-1).astype(bool)[i] & ~old["stand_in"].reshape(-1).astype(bool)[j]
    if same is not None and len(same):
        cand &= ~np.isin(i * n_old + j, np.asarray(same)[:, 0] * n_old + np.asarray(same)[:, 1])
    i, j, d, exact = i[cand], j[cand], d[cand], exact[cand]
    both = {"detail": np.concatenate([new["detail"], old["detail"]])}
    ok = exact.copy()
    if (~exact).any():
        ok[~exact] = confirmed(both["detail"], i[~exact], j[~exact] + n_new)
    return closest_pairs([(i[ok], j[ok], d[ok])], MAX_PAIRS)


# ---------------------------------------------------------------- the neighbour space

def fit_neighbour_space(features, dim=NEIGHBOUR_DIMS, whiten=False, fit_rows=NEIGHBOUR_FIT, seed=0,
                        cosine_max=0):
    """The projection of the neighbour space, fitted on at most fit_rows of features ((n, d) float, numpy or a
    tensor; a seeded random subset above): {"A": (dim', d), "b": (dim',)} float32 numpy, so that
    clustering.apply_pca(x, it) gives the normalised rows (y = x @ A.T + b, then L2-normalised). With whitening
    (clustering.fit_pca_whitening) dim' = clustering.clamp_pca_dim(dim, n, d), as the clustering's; without, y is
    the centred features' coordinates on the top principal directions, dim' = min(dim, n - 1, d).
    cosine_max: with n at most this, {"cosine": True} instead: the rows are the features themselves, L2-normalised
    (neighbour_rows), since n centred points normalised in n - 1 directions are nearly equidistant (2 images: one
    direction, every distance 0 or 4)."""
    n, d = features.shape
    if n <= cosine_max:
        return {"cosine": True}
    rows = np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False)) if n > fit_rows else None
    x = features if rows is None else features[torch.from_numpy(rows) if torch.is_tensor(features) else rows]
    if whiten:
        return clustering.fit_pca_whitening(x, clustering.clamp_pca_dim(dim, n, d), seed=seed)
    dim = max(1, min(dim, len(x) - 1, d))
    components, _, mean = clustering.torch_pca(x, dim, seed=seed)
    A = np.asarray(components, dtype=np.float32)
    return {"A": A, "b": (-A.astype(np.float64) @ np.asarray(mean, dtype=np.float64)).astype(np.float32)}


def neighbour_rows(x, space):
    """The rows ((n, d) features, numpy or a tensor, which they stay) in the neighbour space `space`
    (fit_neighbour_space): L2-normalised projections, or with {"cosine": True} the L2-normalised features, float32."""
    if space.get("cosine"):
        return clustering.l2_normalize(x.float() if torch.is_tensor(x) else np.asarray(x, np.float32))
    return clustering.apply_pca(x, space)


def self_neighbours(x, m, radius=0.0, device=None):
    """Every row's m nearest other rows and every pair closer than radius, in one chunked pass over the rows of x
    ((n, d) float, numpy or a tensor; run in torch on `device`, default x's own or the CPU), no n x n matrix: at
    most clustering.common.rows_per_chunk rows x n distances at a time. Distances are squared L2.
    Returns (dist (n, m') float32 numpy, nearest first, m' = min(m, n - 1); ids (n, m') int64; pairs: (i, j,
    distance) arrays with i < j and distance <= radius, closest first (ties by i, j), at most MAX_PAIRS of them
    (the closest, with a warning when more were found); radius 0: no pairs)."""
    x = to_tensor(x, device or (x.device if torch.is_tensor(x) else "cpu"))
    n, m = len(x), min(m, len(x) - 1)
    sq = (x * x).sum(1)
    dist, ids = np.empty((n, m), np.float32), np.empty((n, m), np.int64)
    pairs, found = [], 0
    step = rows_per_chunk(n, x.device)
    for start in range(0, n, step):
        rows = torch.arange(start, min(n, start + step), device=x.device)
        d = (torch.addmm(sq, x[rows], x.T, alpha=-2) + sq[rows, None]).clamp_(min=0)
        d[torch.arange(len(rows), device=x.device), rows] = float("inf")  # not its own neighbour
        if m:
            near = d.topk(m, dim=1, largest=False)
            dist[rows.cpu().numpy()], ids[rows.cpu().numpy()] = to_numpy(near.values), to_numpy(near.indices)
        if radius > 0:
            r, j = torch.nonzero((d <= radius) & (torch.arange(n, device=x.device)[None, :] > rows[:, None]),
                                 as_tuple=True)
            pairs.append((to_numpy(rows[r]), to_numpy(j), to_numpy(d[r, j])))
            found += len(r)
            pairs = [closest_pairs(pairs, MAX_PAIRS)] if found > MAX_PAIRS else pairs
    if found > MAX_PAIRS:
        warnings.warn(f"{found:,} pairs of images lie within the duplicate threshold {radius}; the closest "
                      f"{MAX_PAIRS:,} are kept (is the threshold too large for these images?)")
    return dist, ids, closest_pairs(pairs, MAX_PAIRS)


def duplicate_pairs(signatures, threshold, device=None):
    """The near-duplicate pairs of the images whose pixel signatures are the rows of `signatures` ((n, m) float):
    pairs closer than the radius min(threshold, DUPLICATE_RATIO x the median distance of an image to its
    DUPLICATE_CROWD-th nearest other image), the second bound only above 2 x DUPLICATE_CROWD images. Among
    photographs of different scenes that median is near 1 and the threshold decides; in a collection of one kind of
    object (Fashion-MNIST: 0.1-0.17) the bound keeps the pairs that stand out from the crowd of look-alikes (as
    Lowe's ratio test, IJCV 2004, keeps a match only when it is much closer than the next). Two chunked passes
    (self_neighbours), no n x n matrix. Returns (pairs as self_neighbours', the radius, the median distance or
    None)."""
    crowd = None
    if len(signatures) > 2 * DUPLICATE_CROWD:
        dist, _, _ = self_neighbours(signatures, DUPLICATE_CROWD, 0, device)
        crowd = float(np.median(dist[:, -1]))
    radius = threshold if crowd is None else min(threshold, DUPLICATE_RATIO * crowd)
    return self_neighbours(signatures, 0, radius, device)[2], radius, crowd


def closest_pairs(pairs, limit):
    """The (i, j, distance) arrays of a list of such chunks, joined, sorted closest first (ties by i, then j) and
    cut to `limit` rows."""
    if not pairs:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, d = (np.concatenate(part) for part in zip(*pairs))
    order = np.lexsort((j, i, d))[:limit]
    return i[order].astype(np.int64), j[order].astype(np.int64), d[order].astype(np.float32)


def outlier_scores(dist, ids=None, group=None):
    """Each image's outlier score from self_neighbours' distances ((n, m) nearest first) and ids: the squared
    distance to its OUTLIER_NEIGHBOUR-th nearest other image that is not a copy of it (group: duplicate_groups'
    (n,) group ids, -1 for none; without ids and group every neighbour counts), or to its farthest when there are
    fewer such others among the m (the k-th nearest neighbour distance of Ramaswamy, Rastogi and Shim, SIGMOD
    2000); 0 for a lone image. On unit vectors the squared distance is 2 x the cosine distance. (n,) float32."""
    if dist.shape[1] == 0:
        return np.zeros(len(dist), np.float32)
    if ids is None or group is None:
        return dist[:, min(OUTLIER_NEIGHBOUR, dist.shape[1]) - 1].astype(np.float32)
    copy = (group[ids] == group[:, None]) & (group[:, None] >= 0)
    far = np.where(copy, np.inf, dist)
    far.sort(1)
    others = (~copy).sum(1)
    pick = np.minimum(OUTLIER_NEIGHBOUR, np.maximum(others, 1)) - 1
    return np.where(others > 0, far[np.arange(len(dist)), pick], dist[:, -1]).astype(np.float32)


def duplicate_groups(pairs, n):
    """The groups of copies that the pairs (i, j, distance) join: (number of groups of two or more images, each
    image's group id (n,) int64, -1 for an image in no pair). Groups are the connected components of the pairs
    (scipy), numbered by their first image."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    i, j, _ = pairs
    group = np.full(n, -1, np.int64)
    if len(i) == 0:
        return 0, group
    _, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    members = np.unique(np.concatenate([i, j]))
    _, first = np.unique(comp[members], return_inverse=True)
    group[members] = first
    return int(first.max()) + 1, group


def similar_images(queries, x, m, own=None, device=None):
    """The m nearest rows of x ((n, d) normalised rows) to each query ((q, d), same space), by squared L2
    distance, chunked (clustering.nearest.nearest_rows), nearest first (ties: the earlier row). own: for each
    query the row of x that is the query's own file, or -1; that row is left out of its neighbours.
    Returns [(rows (m',) int64, distances (m',) float32)] per query, m' = min(m, rows left)."""
    from clustering.nearest import nearest_rows
    own = np.full(len(queries), -1) if own is None else np.asarray(own)
    x = to_tensor(x, device or (x.device if torch.is_tensor(x) else "cpu"))
    if len(queries) == 0 or len(x) == 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in range(len(queries))]
    d, ids = nearest_rows(to_tensor(queries, x.device), x, min(m + 1, len(x)))
    d, ids = to_numpy(d).clip(min=0), to_numpy(ids)
    out = []
    for q in range(len(queries)):
        keep = ids[q] != own[q]
        order = np.lexsort((ids[q][keep], d[q][keep]))[:m]
        out.append((ids[q][keep][order].astype(np.int64), d[q][keep][order].astype(np.float32)))
    return out


# ---------------------------------------------------------------- the CSV files

def write_duplicates(path, paths, pairs):
    """duplicates.csv: `path_a,path_b,distance`, one row per pair (path_a the earlier row of predictions.csv),
    closest first; UTF-8, name bytes that are not UTF-8 as \\xNN (as predictions.csv)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path_a", "path_b", "distance"])
        for i, j, d in zip(*pairs):
            w.writerow([printable(paths[i]), printable(paths[j]), f"{float(d):.6f}"])


def write_training_duplicates(path, paths, training_paths, pairs):
    """duplicates_of_training.csv: `path,training_path,distance`, one row per pair of a new image (row of
    predictions.csv) and a training image it is a near-duplicate of (distance 0: the same pixels), closest first;
    names as in predictions.csv."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "training_path", "distance"])
        for i, j, d in zip(*pairs):
            w.writerow([printable(paths[i]), printable(training_paths[j]), f"{float(d):.6f}"])


def write_similar(path, queries, found, paths):
    """similar.csv: `query,rank,path,distance`, the neighbours of every query (found: similar_images' list) in
    order, rank from 1; names as in predictions.csv."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["query", "rank", "path", "distance"])
        for query, (rows, dist) in zip(queries, found):
            for rank, (i, d) in enumerate(zip(rows, dist), 1):
                w.writerow([printable(query), rank, printable(paths[i]), f"{float(d):.6f}"])


@dataclass
class Answers:
    """What pred.py found besides the clusters, row i = row i of predictions.csv: `outlier` (outlier_score, (n,)
    float32), `pairs` (near-duplicates: self_neighbours' (i, j, distance), or None when the search is off),
    `groups` (duplicate_groups' number of groups), `threshold` (duplicate_pairs' radius: the largest distance of a
    pair), `setting` (cfg duplicate_threshold), `crowd` (find_duplicates' crowd distance or None), `declined`
    (candidate pairs turned down), `exact` (pairs at distance 0), `group` (duplicate_groups' (n,) ids or None),
    `training` (duplicates_across' pairs of new and training images, training paths) or None), `similar`
    ([(query path, thumbnail JPEG bytes or None, neighbour rows (m,), squared distances (m,))] per query image, or
    None when no query was asked for)."""
    outlier: np.ndarray
    pairs: tuple = None
    groups: int = 0
    threshold: float = 0.0
    setting: float = 0.0
    crowd: float = None
    similar: list = None
    declined: int = 0
    exact: int = 0
    group: np.ndarray = None
    training: tuple = None

    def write_csv(self, folder, paths):
        """duplicates.csv (with the search on), duplicates_of_training.csv (with `training`) and similar.csv (with
        queries) into folder; paths: the predicted images' files, row i = row i of predictions.csv."""
        if self.pairs is not None:
            write_duplicates(os.path.join(folder, "duplicates.csv"), paths, self.pairs)
        if self.training is not None:
            pairs, training_paths = self.training
            write_training_duplicates(os.path.join(folder, "duplicates_of_training.csv"), paths, training_paths, pairs)
        if self.similar is not None:
            write_similar(os.path.join(folder, "similar.csv"), [q[0] for q in self.similar],
                          [q[2:] for q in self.similar], paths)

    def summary(self):
        """metrics.json's fields: duplicates {threshold, duplicate_threshold, crowd_distance, pairs, groups,
        exact_pairs (pairs of the same decoded pixels), declined (candidate pairs the confirmation turned down)} (with
        the search on), duplicates_of_training (new images with a near-duplicate among the training images, with
        --images NEW), similar_queries (with queries asked for: how many images were queried)."""
        out = {}
        if self.pairs is not None:
            out["duplicates"] = {"threshold": round(float(self.threshold), 6), "duplicate_threshold": self.setting,
                                 "crowd_distance": None if self.crowd is None else round(self.crowd, 6),
                                 "pairs": len(self.pairs[0]), "groups": self.groups, "exact_pairs": self.exact,
                                 "declined": self.declined}
        if self.training is not None:
            out["duplicates_of_training"] = int(len(np.unique(self.training[0][0])))
        if self.similar is not None:
            out["similar_queries"] = len(self.similar)
        return out


# ---------------------------------------------------------------- everything asked, in one call

def neighbour_space(x, seed=0):
    """(the projection, the rows of x in it) of the neighbour space of the features x ((n, d), numpy or a tensor,
    which the rows stay): fit_neighbour_space, the cosine of the features up to NEIGHBOUR_COSINE_MAX images."""
    space = fit_neighbour_space(x, seed=seed, cosine_max=NEIGHBOUR_COSINE_MAX)
    return space, neighbour_rows(x, space)


def answers(n, neighbours, duplicates=None, training=None, queries=None, similar_k=10, device=None, log=None):
    """The Answers of n images. neighbours: neighbour_space's (projection, the images' (n, d) rows), where every
    image's outlier score is found (outlier_scores; a copy of it does not count); duplicates: (fingerprint's arrays
    stacked, one row per image; the threshold, cfg duplicate_threshold > 0) or None: the near-duplicate pairs and
    their groups (find_duplicates, duplicate_groups); training: (the training images' stacked fingerprints, (p, 2)
    pairs of (row, training row) that are one file, the training paths) or None: the images that are
    near-duplicates of training images (duplicates_across at the radius of the images' own search; only with
    duplicates); queries: [(paths, thumbnails (JPEG bytes or None each), features (q, d) float numpy, (q,) rows
    of the image that is the same file or -1)] per similar_to file or folder, or None: the similar_k nearest
    images of each query (similar_images). device: where the searches run, in torch (None: the CPU). log: one line
    for the neighbours and one for the training duplicates (None: silent)."""
    (space, rows), log, t0 = neighbours, log or (lambda msg: None), time.time()
    out, group = Answers(np.zeros(n, np.float32)), None
    if duplicates is not None:
        prints, out.setting = duplicates
        out.pairs, out.threshold, out.crowd, out.declined = find_duplicates(prints, out.setting, device)
        out.groups, group = duplicate_groups(out.pairs, n)
        out.group, out.exact = group, int((out.pairs[2] == 0).sum())
    dist, ids, _ = self_neighbours(rows, OUTLIER_NEIGHBOUR + OUTLIER_SKIP, 0, device)
    out.outlier = outlier_scores(dist, ids, group)
    line = (f"{counted(len(out.pairs[0]), 'near-duplicate pair')} in {counted(out.groups, 'group')} "
            f"({out.exact} of exact copies; distance <= {out.threshold:.3g}; {out.declined} candidate "
            "pairs turned down by the pixel comparison), " if out.pairs is not None else "")
    if queries is not None:
        found = [similar_images(neighbour_rows(features, space), rows, similar_k, own, device)
                 for _, _, features, own in queries]  # one search per file or folder, as they were asked
        out.similar = [(p, t, r, d) for (paths, thumbs, _, _), near in zip(queries, found)
                       for p, t, (r, d) in zip(paths, thumbs, near)]
        line += f"the {similar_k} nearest images of {counted(len(out.similar), 'query image')}, "
    log(f"neighbours: {line}outlier scores ({time.time() - t0:.1f} s)")
    if training is not None and duplicates is not None:
        out.training = training_duplicates(duplicates[0], training, out.threshold, device, log)
    return out


def training_duplicates(prints, training, radius, device=None, log=None):
    """answers' duplicates of training images: (duplicates_across' pairs (new row, training row, distance), the
    training paths), with one log line. prints, training: as answers'."""
    t0 = time.time()
    old, same, paths = training
    pairs = duplicates_across(prints, old, radius, same, device)
    (log or (lambda msg: None))(
        f"duplicates of training images: {counted(len(np.unique(pairs[0])), 'new image')} near-duplicates of "
        f"{counted(len(np.unique(pairs[1])), 'training image')} ({time.time() - t0:.1f} s)")
    return pairs, paths
