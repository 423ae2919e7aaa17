"""What a user looks at after a prediction: pred.py's page of every cluster (index.html with thumbnails) and the
2-D map of the embeddings (map.png). train.py's curves are curves.py's.

The page is one self-contained HTML file: inline CSS, no script, no network, only relative links (thumbs/...,
map.png, clusters/<id>/<file>), so the folder opens from the file system and can be zipped and mailed. Text is
html-escaped and every href/src is the percent-encoded bytes of its path, so any file name (spaces, `<&"`, bytes
that are not UTF-8) stays a valid page with working links. The thumbnails come as JPEG bytes (thumbnails.py makes
them in the feature pass); this module only draws.
"""
import html
import io
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import numpy as np

import metrics
from clustering import MIN_IMAGES_PER_CLUSTER
from collection import OUTLIER_NEIGHBOUR
from curves import training_gain_line
from distributed import usable_cores
from errors import printable

TYPICAL = 24  # thumbnails per card: the images nearest to their centroid
ATYPICAL = 8  # and, apart, the farthest ones
MAX_CLUSTERS = 200  # cards on one page (the largest clusters); the rest are in predictions.csv and clusters/
MAP_PERPLEXITY = 30.0
MAP_ITERATIONS = 400  # t-SNE iterations (scikit-learn's minimum is 250, its default 1000)
MAP_ANGLE = 0.7  # Barnes-Hut's accuracy/speed trade-off (scikit-learn's default 0.5)
PAIRS_SHOWN = 60  # near-duplicate pairs on the page (the closest); every pair is in duplicates.csv
QUERIES_SHOWN = 50  # similar_to queries on the page (the first); every one is in similar.csv
OUTLIERS_SHOWN = 24  # images of the highest outlier_score on the page
K_CURVE = "k_selection.png"  # the score curve of pred_k auto, beside index.html


# ---------------------------------------------------------------- the page

@dataclass
class Prediction:
    """What pred.py predicted, row i = row i of predictions.csv: `paths` (file paths, str, undecodable bytes as
    surrogate escapes), `links` (each image's path inside pred_dir, relative: clusters/<id>/<name>), `ids` (int
    cluster ids, (n,)), `dist` (squared distance to the centroid, (n,)), `labels` (int class indices, (n,), or
    None), `classes` (names), `result` (metrics.json as a dict), `source` (what the images are, for the header),
    `thumbs` (JPEG bytes per image, or None where there is none); what collection.py found, each optional:
    `pairs` (near-duplicates: (i, j, squared distance) arrays, closest first), `outlier` (outlier_score, (n,)),
    `similar` ([(query name, its thumbnail JPEG bytes or None, rows (m,), squared distances (m,))] per query),
    `group` (collection.duplicate_groups' (n,) group ids, -1 for an image without copies, or None)."""
    paths: list
    links: list
    ids: np.ndarray
    dist: np.ndarray
    labels: object
    classes: list
    result: dict
    source: str
    thumbs: list = field(default_factory=list)
    pairs: tuple = None
    outlier: np.ndarray = None
    similar: list = field(default_factory=list)
    group: np.ndarray = None


def href(relative):
    """A relative path as an attribute value: its bytes percent-encoded (any name, valid UTF-8 or not)."""
    return html.escape(urllib.parse.quote(os.fsencode(relative)), quote=True)


def text(value):
    """Any value as HTML text; bytes of a file name that are not UTF-8 show as \\xNN."""
    return html.escape(printable(value), quote=True)


def cluster_order(ids, k=None):
    """Non-empty cluster ids, largest first (ties: smaller id first), and the sizes ((k,) int array)."""
    sizes = np.bincount(ids, minlength=k or 0)
    return [int(c) for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0], sizes


STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.1em;margin:0 0 .3em}h3{font-size:.95em;margin:.5em 0 .2em;color:#555}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4}.info td,.info th{text-align:left}.note{color:#555}
.card{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:.8em 0}
.thumbs{display:flex;flex-wrap:wrap;gap:3px}.thumbs img{width:72px;height:72px;object-fit:contain;background:#eee}
.odd img{outline:2px solid #d95f02}.top{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
img.map{width:560px;max-width:100%}img.curve{width:420px;max-width:100%}
.pairs{display:flex;flex-wrap:wrap;gap:6px}.pair{border:1px solid #ddd;border-radius:4px;padding:3px;font-size:12px;
text-align:center}.pair img,.query img{width:96px;height:96px;object-fit:contain;background:#eee}
.query img{outline:2px solid #1b9e77}nav a{margin-right:1em}
.name{display:inline-block;max-width:200px;overflow-wrap:anywhere;color:#333}"""


def network_text(r):
    """Which network a prediction used (metrics.json r): the epoch of how many, and how to get the last one."""
    epoch, of = r["checkpoint_epoch"], r.get("epochs_trained", r["checkpoint_epoch"])
    if epoch == of:
        return f"the network after epoch {epoch} of {of}, the last"
    last = os.path.join(os.path.dirname(r["checkpoint"]), "checkpoint.pth.tar")
    return (f"the network after epoch {epoch} of {of}, chosen by select_epoch without labels; pred.py --ckpt_path "
            f"{last} uses the last")


def purity_note(n_images, n_clusters):
    """What the purity of a page's header means: the share of images in their cluster's majority class, which is 1
    for clusters of one image; said plainly when the clusters average fewer than MIN_IMAGES_PER_CLUSTER images."""
    if n_images < MIN_IMAGES_PER_CLUSTER * n_clusters:
        return (f"(the share of images in their cluster's majority class; with {n_images} images in {n_clusters} "
                "clusters it is near 1 whatever the clustering: judge by NMI and ACC)")
    return "(the share of images in their cluster's majority class)"


def info_html(p):
    r = p.result
    scored = " (label metrics are training-set scores)" if "nmi" in r else ""  # a folder without labels has none
    split = {"held_out": "held out: none of them trained on", "training": f"the run's training images{scored}",
             "mixed": f"{r.get('n_training_images')} of them are training images of the run",
             "unknown": "unknown (the training tree is gone)"}.get(r.get("images"), "")
    rows = [("images", f"{r['n_images']} of {p.source}"), ("which images", split),
            ("checkpoint", f"{r['checkpoint']} ({network_text(r)})"),
            ("mode", f"{r['mode']}, k = {r['k']}, {r['clusters_nonempty']} clusters not empty")]
    chosen = r.get("k_selection")
    if chosen:
        ks = [int(k) for k in chosen["scores"]]
        found = chosen.get("hdbscan_clusters", chosen["chosen"])
        clamped = "" if found == chosen["chosen"] else f" ({found}, clamped into {min(ks)}-{max(ks)})"
        rows.append(("k", f"{chosen['chosen']}, chosen without labels: HDBSCAN's number of clusters of "
                          f"{chosen['rows']} images in the neighbour space{clamped}; runner-up k = "
                          f"{chosen.get('runner_up', '-')} (the next best {chosen['criterion']} of the k-means of "
                          f"k = {min(ks)}-{max(ks)}, scored on {chosen['rows_scored']} images; the curve below)"))
    if r.get("training_gain"):
        rows.append(("training, without labels", training_gain_line(r["training_gain"])))
    if r.get("duplicates"):
        d = r["duplicates"]
        rows.append(("near-duplicates", f"{d['pairs']} pair{'s' * (d['pairs'] != 1)} in {d['groups']} "
                                        f"group{'s' * (d['groups'] != 1)} (distance <= {d['threshold']:g}; "
                                        f"{d.get('exact_pairs', 0)} of the same pixels; {d.get('declined', 0)} "
                                        "candidate pairs turned down by the pixel comparison)"))
    if "nmi" in r:
        purity = r["purity"] if "purity" in r else metrics.purity(p.labels, p.ids)
        scores = (f"NMI {r['nmi']:.3f} &middot; ACC {r['acc']:.3f} &middot; ARI {r['ari']:.3f} &middot; purity "
                  f"{purity:.3f} {text(purity_note(r['n_images'], r['clusters_nonempty']))}")
        rows.append(("against the labels", scores))
    body = "".join(f"<tr><th>{text(a)}</th><td>{b if a == 'against the labels' else text(b)}</td></tr>"
                   for a, b in rows)
    return f'<table class="info">{body}</table>'


def class_table_html(p, order, sizes):
    """Cluster x class counts, one row per shown cluster (largest first), each cell shaded by its share of the row."""
    n_cls = len(p.classes)
    counts = np.zeros((max(p.ids.max() + 1, len(sizes)), n_cls), dtype=np.int64)
    np.add.at(counts, (p.ids, p.labels), 1)
    head = "<tr><th>cluster</th><th>size</th>" + "".join(f"<th>{text(c)}</th>" for c in p.classes) + "</tr>"
    rows = []
    for cid in order:
        cells = "".join(f'<td style="background:rgba(33,102,172,{0.85 * n / sizes[cid]:.2f})'
                        f'{";color:#fff" if n / sizes[cid] > 0.5 else ""}">{n or ""}</td>' for n in counts[cid])
        rows.append(f'<tr><th><a href="#c{cid}">{cid}</a></th><td>{sizes[cid]}</td>{cells}</tr>')
    return f"<div><h2>Clusters x classes (counts)</h2><table>{head}{''.join(rows)}</table></div>"


def thumb_html(p, i, thumbs_dir, tip=None):
    """Image i's thumbnail linked to the image (its name alone when it has no thumbnail); the tooltip is its name
    and `tip`, or its distance to the centroid and its class."""
    name = os.path.basename(p.paths[i])
    if tip is None:
        tip = f"distance {p.dist[i]:.3f}" + (f", {p.classes[p.labels[i]]}" if p.labels is not None else "")
    tip = f"{name}  ({tip})"
    src = f'{thumbs_dir}/{i:06d}.jpg' if p.thumbs and p.thumbs[i] is not None else None
    inner = (f'<img src="{href(src)}" loading="lazy" alt="{text(name)}" title="{text(tip)}">' if src
             else text(name))
    return f'<a href="{href(p.links[i])}">{inner}</a>'


def name_html(p, i):
    """Image i's file name, shown under its thumbnail (not only on hover): the name a user deletes or moves."""
    return f'<span class="name">{text(os.path.basename(p.paths[i]))}</span>'


def members_by_distance(ids, dist):
    """{cluster id: its rows of predictions.csv, nearest to the centroid first (ties: smaller row first)}, from one
    sort of all n rows ((n,) ids and distances)."""
    rows = np.lexsort((np.arange(len(ids)), dist, ids))
    cuts = np.flatnonzero(np.diff(ids[rows])) + 1
    return {int(ids[part[0]]): part for part in np.split(rows, cuts) if len(part)}


def card_html(p, cid, members, shown, thumbs_dir):
    """One cluster: id, size, majority class and share, its most typical images and apart its least typical.
    members: the cluster's rows, nearest to the centroid first."""
    size = len(members)
    typical, odd = members[:TYPICAL], members[TYPICAL:][-ATYPICAL:]
    shown.update(typical.tolist() + odd.tolist())
    title = f"Cluster {cid} &middot; {size} image{'s' if size != 1 else ''}"
    if p.labels is not None:
        votes = np.bincount(p.labels[members], minlength=len(p.classes))
        top = int(votes.argmax())
        title += f" &middot; majority {text(p.classes[top])} ({100 * votes[top] / size:.0f}%)"
    parts = [f'<section class="card" id="c{cid}"><h2>{title}</h2>',
             f"<h3>most typical ({len(typical)} nearest to the centroid)</h3>",
             '<div class="thumbs">' + "".join(thumb_html(p, i, thumbs_dir) for i in typical) + "</div>"]
    if len(odd):
        parts += [f"<h3>least typical ({len(odd)} farthest from the centroid)</h3>",
                  '<div class="thumbs odd">' + "".join(thumb_html(p, i, thumbs_dir) for i in odd) + "</div>"]
    return "".join(parts) + "</section>"


def duplicates_html(p, shown, thumbs_dir):
    """The near-duplicate pairs, closest first (at most PAIRS_SHOWN), each pair's thumbnails side by side."""
    i, j, d = p.pairs
    r = p.result["duplicates"]
    lowered = (f", lowered from duplicate_threshold {r['duplicate_threshold']:g} to a quarter of the images' usual "
               "distance to their 10th nearest other picture" if r["threshold"] < r["duplicate_threshold"] else "")
    note = (f"Exact copies (the same pixels, shown as such) and pairs of images whose pixel signatures are at most "
            f"{r['threshold']:.3g} apart (squared distance{lowered}) that a comparison of their pixels confirmed, "
            "closest first: the same picture resized, re-encoded, lightly cropped or recoloured"
            f"{f'; the {PAIRS_SHOWN} closest of the {len(d)} are shown' if len(d) > PAIRS_SHOWN else ''}; "
            "every pair is in duplicates.csv." if len(d) else "No two images are that close.")
    tiles = []
    for a, b, dist in list(zip(i, j, d))[:PAIRS_SHOWN]:
        shown.update((int(a), int(b)))
        tip = f"near-duplicate, distance {dist:.4f}"
        what = "the same pixels" if dist == 0 else f"{dist:.4f}"
        tiles.append(f'<div class="pair">{thumb_html(p, a, thumbs_dir, tip)} {thumb_html(p, b, thumbs_dir, tip)}'
                     f"<br>{what}<br>{name_html(p, a)}<br>{name_html(p, b)}</div>")
    return (f'<div class="card" id="duplicates"><h2>Duplicates &middot; {r["pairs"]} pair'
            f'{"s" * (r["pairs"] != 1)} in {r["groups"]} group{"s" * (r["groups"] != 1)}</h2>'
            f'<p class="note">{text(note)}</p><div class="pairs">{"".join(tiles)}</div></div>')


def similar_html(p, shown, thumbs_dir):
    """One block per similar_to query (at most QUERIES_SHOWN): its thumbnail (outlined), then its neighbours."""
    blocks = []
    for q, (name, jpeg, rows, dist) in enumerate(p.similar[:QUERIES_SHOWN]):
        shown.update(int(i) for i in rows)
        query = (f'<img src="{href(f"{thumbs_dir}/query_{q:04d}.jpg")}" loading="lazy" alt="{text(name)}" '
                 f'title="{text(name)}  (the query)">' if jpeg is not None else text(os.path.basename(name)))
        near = "".join(thumb_html(p, i, thumbs_dir, f"rank {r}, distance {d:.4f}")
                       for r, (i, d) in enumerate(zip(rows, dist), 1))
        blocks.append(f'<h3 id="q{q}">{text(name)}</h3><div class="thumbs"><span class="query">{query}</span>'
                      f"{near}</div>")
    more = (f"; the first {QUERIES_SHOWN} of the {len(p.similar)} queries are shown"
            if len(p.similar) > QUERIES_SHOWN else "")
    return (f'<div class="card" id="similar"><h2>Images like these &middot; {len(p.similar)} '
            f'quer{"ies" if len(p.similar) != 1 else "y"}</h2><p class="note">Each query (outlined), then its '
            f'nearest predicted images in the neighbour space, nearest first{more}; all in similar.csv.</p>'
            + "".join(blocks) + "</div>")


def outlier_rows(outlier, group=None, shown=OUTLIERS_SHOWN):
    """The rows of the `shown` highest outlier scores ((n,) float; ties: the earlier row), highest first, one per
    group of copies (group: collection.duplicate_groups' (n,) ids, -1 for none, or None)."""
    order = np.lexsort((np.arange(len(outlier)), -np.asarray(outlier)))
    if group is None:
        return order[:shown]
    seen, rows = set(), []
    for i in order:
        g = int(group[i])
        if g >= 0 and g in seen:
            continue
        seen.add(g)
        rows.append(int(i))
        if len(rows) == shown:
            break
    return np.array(rows, np.int64)


def outliers_html(p, shown, thumbs_dir, neighbour=OUTLIER_NEIGHBOUR):
    """The OUTLIERS_SHOWN images of the highest outlier_score (ties: the earlier row), highest first, one image of
    each group of copies, each with its file name."""
    rows = outlier_rows(p.outlier, p.group)
    shown.update(int(i) for i in rows)
    tiles = "".join(f'<div class="pair">{thumb_html(p, i, thumbs_dir, f"outlier_score {p.outlier[i]:.4f}")}'
                    f"<br>{p.outlier[i]:.3f}<br>{name_html(p, i)}</div>" for i in rows)
    return ('<div class="card" id="outliers"><h2>Least like any other</h2><p class="note">The images whose '
            f"{neighbour}th nearest other image that is not a copy of it is farthest (outlier_score in "
            "predictions.csv: the squared distance to it in the neighbour space, 2 x the cosine distance), highest "
            "first; one image of each group of copies.</p>"
            f'<div class="pairs odd">{tiles}</div></div>')


def collection_html(p, shown, thumbs_dir):
    """The sections of collection.py's answers that this prediction has, with a line of links to them."""
    parts = []
    if p.pairs is not None:
        parts.append(("duplicates", "Duplicates", duplicates_html(p, shown, thumbs_dir)))
    if p.similar:
        parts.append(("similar", "Images like these", similar_html(p, shown, thumbs_dir)))
    if p.outlier is not None and len(p.outlier):
        parts.append(("outliers", "Least like any other", outliers_html(p, shown, thumbs_dir)))
    if not parts:
        return []
    links = " ".join(f'<a href="#{key}">{name}</a>' for key, name, _ in parts)
    return [f'<nav>{links} <a href="#clusters">Clusters</a></nav>'] + [html_ for _, _, html_ in parts]


def page_html(p, shown, map_file=None, max_clusters=MAX_CLUSTERS, thumbs_dir="thumbs", curve_file=None):
    """The whole page as a str; `shown` (a set) receives the rows whose thumbnails it shows."""
    order, sizes = cluster_order(p.ids, p.result.get("k"))
    cards = order[:max_clusters]
    cap = (f'<p class="note">This page shows the {len(cards)} largest of the {len(order)} clusters; every image is '
           "in predictions.csv and clusters/.</p>" if len(cards) < len(order) else "")
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             f"<title>Clusters of {p.result['n_images']} images</title><style>{STYLE}</style></head><body>",
             f"<h1>Clusters of {p.result['n_images']} images</h1>", info_html(p)]
    side = [class_table_html(p, cards, sizes)] if p.labels is not None else []
    if map_file:
        side.append(f'<div><h2>Map of the embeddings</h2><a href="{href(map_file)}"><img class="map" '
                    f'src="{href(map_file)}" loading="lazy" alt="t-SNE map of the embeddings"></a></div>')
    if curve_file:
        side.append(f'<div><h2>Choosing k</h2><img class="curve" src="{href(curve_file)}" alt="score against k"></div>')
    parts += ['<div class="top">' + "".join(side) + "</div>", *collection_html(p, shown, thumbs_dir), cap,
              '<p class="note" id="clusters">Each card: the images nearest to the cluster\'s centroid, then (outlined) the farthest, '
              "where mistakes and outliers show; hover for the file name, click for the image.</p>"]
    members = members_by_distance(np.asarray(p.ids), np.asarray(p.dist))
    parts += [card_html(p, cid, members[cid], shown, thumbs_dir) for cid in cards]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_page(folder, p, map_file=None, max_clusters=MAX_CLUSTERS):
    """folder/index.html and folder/thumbs/<row>.jpg for the images the page shows (rows of predictions.csv,
    6 digits), thumbs/query_<q>.jpg for the similar_to queries it shows (4 digits) and, after pred_k auto,
    folder/k_selection.png (k_curve_png). Returns the number of thumbnails written."""
    shown, curve = set(), None
    if p.result.get("k_selection"):
        curve = K_CURVE
        with open(os.path.join(folder, curve), "wb") as f:
            f.write(k_curve_png(p.result["k_selection"], p.result["n_images"]))
    page = page_html(p, shown, map_file, max_clusters, curve_file=curve)
    files = {f"{i:06d}.jpg": p.thumbs[i] for i in sorted(shown) if p.thumbs and p.thumbs[i] is not None}
    files.update({f"query_{q:04d}.jpg": query[1] for q, query in enumerate(p.similar[:QUERIES_SHOWN])
                  if query[1] is not None})
    if files:
        os.makedirs(os.path.join(folder, "thumbs"), exist_ok=True)
    for name, jpeg in files.items():
        with open(os.path.join(folder, "thumbs", name), "wb") as f:
            f.write(jpeg)
    with open(os.path.join(folder, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)
    return len(files)


def k_curve_png(selection, n_images):
    """PNG bytes of metrics.json's k_selection: the criterion's score of every k tried, the chosen k and the
    runner-up marked."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
    points = [(int(k), v) for k, v in selection["scores"].items() if v is not None]
    fig = Figure(figsize=(5.2, 3.2))
    ax = fig.subplots()
    if points:
        ax.plot(*zip(*points), marker="o", markersize=3, linewidth=1.2)
    chosen = selection["chosen"]
    ax.axvline(chosen, color="C3", linestyle=":", linewidth=1.2)
    ax.annotate(f"k = {chosen}", (chosen, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
                textcoords="offset points", color="C3", fontsize=9)
    second = selection.get("runner_up")
    if second is not None and second != chosen:
        ax.axvline(second, color="C2", linestyle="--", linewidth=1.0)
        ax.annotate(f"runner-up {second}", (second, 1), xycoords=("data", "axes fraction"), xytext=(4, -24),
                    textcoords="offset points", color="C2", fontsize=9)
    sample = "" if selection["rows_scored"] >= n_images else f" (a random {selection['rows_scored']:,} of the {n_images:,})"
    ax.set_title(f"{selection['criterion'].replace('_', '-')} of the k-means partition of each k{sample}", fontsize=9)
    ax.set_xlabel("k", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=90, format="png")
    return png.getvalue()


# ---------------------------------------------------------------- the map

MARKERS = "os^vD<>pP*Xh"


def tsne_threads():
    """OpenMP threads of the t-SNE: all cores but one (at least one). Its many short parallel steps wait for every
    thread, and with each core busy they crawl: on 2 cores with another process running, 500 points took 22 s on 2
    threads against 1 s on one."""
    return max(1, usable_cores() - 1)


def embed_2d(x, seed=0):
    """t-SNE (scikit-learn, Barnes-Hut with MAP_ANGLE, PCA start, MAP_ITERATIONS, tsne_threads()) of the rows of x
    (n x d float, n >= 3): (n x 2 float32, the perplexity used: MAP_PERPLEXITY, lowered below (n - 1) / 3 for
    small n as scikit-learn requires). On the sample's 500 and 3,000 of Fashion-MNIST's test embeddings, 400
    iterations at angle 0.7 kept the map's trustworthiness (0.992) and its 10-NN cluster accuracy (within 0.004)
    of 500 at 0.5, in about two thirds of the time."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency
    perplexity = min(MAP_PERPLEXITY, max(1.0, (len(x) - 1) / 3 - 0.01))
    if np.ptp(x, axis=0).max() == 0:  # all rows equal: the PCA start would divide by 0, and Barnes-Hut crash
        return np.zeros((len(x), 2), dtype=np.float32), perplexity
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=MAP_ITERATIONS, angle=MAP_ANGLE,
                random_state=seed)
    with threadpool_limits(tsne_threads(), user_api="openmp"):
        return tsne.fit_transform(np.asarray(x, dtype=np.float32)).astype(np.float32), perplexity


def write_map(path, embeddings, ids, labels=None, classes=(), max_points=10_000, seed=0):
    """map.png at path (see map_png), drawn now; nothing is written under 3 images. Returns the number of points
    drawn."""
    return MapJob(embeddings, ids, labels, classes, max_points, seed).write(path)


def map_png(embeddings, ids, labels=None, classes=(), max_points=10_000, seed=0):
    """(PNG bytes, points drawn) of the t-SNE map of the embeddings (n x d float) of at most max_points images (a
    seeded random subset above that, said on the picture): one colour per cluster (`ids`, (n,) int; its id written
    at its median) and, with `labels` ((n,) int indices into `classes`), one marker per class. (None, 0) under
    3 images."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
    n = len(embeddings)
    if n < 3:
        return None, 0
    rows = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points, False))
    t0 = time.time()
    xy, perplexity = embed_2d(embeddings[rows], seed)
    seconds = time.time() - t0
    ids = np.asarray(ids)[rows]
    fig = Figure(figsize=(8, 7.2))
    ax = fig.subplots()
    colours = colormaps["tab10" if ids.max() < 10 else "tab20"]
    colour = np.array([colours(i % colours.N) for i in ids])
    marker_of = labels[rows] if labels is not None else np.zeros(len(rows), dtype=np.int64)
    for c in np.unique(marker_of):
        mask = marker_of == c
        name = printable(classes[c]) if labels is not None else None
        ax.scatter(xy[mask, 0], xy[mask, 1], c=colour[mask], s=16 if len(rows) < 2000 else 6,
                   marker=MARKERS[c % len(MARKERS)], linewidths=0, alpha=0.8, label=name)
    if labels is not None:
        legend = ax.legend(fontsize=7, loc="best", title="class (marker)", title_fontsize=7, markerscale=1.5)
        for handle in legend.legend_handles:
            handle.set_color("grey")
    for cid in np.unique(ids)[:60]:  # beyond 60 ids the labels would hide the map
        mx, my = np.median(xy[ids == cid], axis=0)
        ax.annotate(str(cid), (mx, my), fontsize=8, weight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colours(cid % colours.N), "alpha": 0.8})
    subset = f"a random {len(rows):,} of the {n:,} images" if len(rows) < n else f"all {n:,} images"
    ax.set_title(f"t-SNE of the embeddings of {subset}; colour and number = cluster\n(scikit-learn, perplexity "
                 f"{perplexity:.3g}, {MAP_ITERATIONS} iterations, angle {MAP_ANGLE}, {seconds:.1f} s)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=90, format="png")
    return png.getvalue(), len(rows)


class MapJob:
    """map_png(*args, **kwargs) in a background thread, so that the map is drawn while pred.py writes its other
    files (the t-SNE runs in compiled code that releases the GIL). The thread writes no file; wait() returns
    map_png's (PNG bytes, points) or raises its exception. A daemon: an interrupted pred.py does not wait for it."""

    def __init__(self, *args, **kwargs):
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self.run, args=args, kwargs=kwargs, daemon=True, name="map")
        self.thread.start()

    def run(self, *args, **kwargs):
        try:
            self.result = map_png(*args, **kwargs)
        except BaseException as e:  # handed to the waiting thread
            self.error = e

    def wait(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def write(self, path):
        """wait(), then the PNG at path (nothing under 3 images). Returns the number of points drawn."""
        png, drawn = self.wait()
        if png is not None:
            with open(path, "wb") as f:
                f.write(png)
        return drawn
