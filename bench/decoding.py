"""The decoding and start-up cases of bench/run.py, on synthetic JPEG trees built in a temporary folder.

decode     500 x 375 JPEGs (ImageNet's typical size) decoded and transformed on one core (torch threads 1),
           the Pillow path (load_image + the PIL transforms, all that existed before decode_jpeg) against
           decode_file + the tensor transforms, at input_size 224 (decode_side 896: no reduction), 64 and 32
           (decode_side 256 and 128, the default); images/s of the eval and the train transform. A second
           set with more detail (quality 95, more grain: more bytes a pixel) at input_size 224.
crossover  per JPEG size (500 x 375 to 4000 x 3000) and decode_side (128, 256): Pillow's reduced (draft)
           decode against decode_jpeg at full size + an antialiased resize, ms per image, and which of the two
           decode_file's rule (DRAFT_MIN_SCALE) takes.
startup    a tree of 64 x 64 JPEGs in 100 class folders scanned and checked by ClusterDataset: Pillow in the
           main process (check_workers 0, jpeg_decoder pil) against decode_file in the main process only
           (check_workers 1) and in one process per core (the defaults); seconds, and the kept lists compared.

The photographs are random crops of the two sample photographs that scikit-learn ships (china.jpg and
flower.jpg, 640 x 427), resized, with a little gaussian grain (sensor noise, which an enlarged crop lacks),
saved at quality 90.
"""
import gc
import io
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataset import ClusterDataset, eval_transform, scan_tree, train_transform  # noqa: E402
from decoding import (DRAFT_MIN_SCALE, check_worker_count, decode_file, draft_scale, jpeg_tensor,  # noqa: E402
                      load_image)

CROSSOVER_SIZES = ((500, 375), (1000, 750), (2000, 1500), (4000, 3000))
CROSSOVER_SIDES = (128, 256)
DECODE_INPUT_SIZES = (224, 64, 32)


def source_photos():
    from sklearn.datasets import load_sample_image
    return [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]


def photo_bytes(size, rng, sources, grain=3.0, quality=90):
    """JPEG bytes of a photograph of `size` (width, height): a random crop of 60-100% of a source's height
    at the aspect of `size`, resized (bicubic), with gaussian grain of `grain` grey levels."""
    src = sources[int(rng.integers(len(sources)))]
    aspect = size[0] / size[1]
    h = min(int(src.height * rng.uniform(0.6, 1.0)), int(src.width / aspect))
    w = int(h * aspect)
    x, y = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
    pixels = np.asarray(src.crop((x, y, x + w, y + h)).resize(size, Image.BICUBIC), dtype=np.float32)
    pixels += rng.normal(0, grain, pixels.shape).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_photos(folder, size, n, seed=0, **style):
    """n photographs of `size` as folder/<i>.jpg (style: photo_bytes' grain and quality); their paths."""
    os.makedirs(folder, exist_ok=True)
    rng, sources, paths = np.random.default_rng(seed), source_photos(), []
    for i in range(n):
        paths.append(os.path.join(folder, f"{i:05d}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(photo_bytes(size, rng, sources, **style))
    return paths


def bytes_per_pixel(paths, size):
    return float(np.mean([os.path.getsize(p) for p in paths])) / (size[0] * size[1])


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def per_image_ms(fns, paths, reps):
    """{name: the best of `reps` runs over `paths`, in ms per image} for every function of fns, the
    functions taking turns within every repetition (a busy machine slows all of them alike)."""
    best = {name: float("inf") for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for path in paths:
                fn(path)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(paths) * 1e3)
    return best


def one_core(fn, *args):
    """fn(*args) with torch on one thread: the rates are per core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def _decode_rates(paths, reps, rrc_scale_min, input_sizes=DECODE_INPUT_SIZES):
    rows = {}
    for size in input_sizes:
        side, evaluate, train = 4 * size, eval_transform(size), train_transform(size, rrc_scale_min)
        ms = per_image_ms({
            "eval_old": lambda p: evaluate.pil(load_image(p, side)),
            "eval_new": lambda p: evaluate(decode_file(p, side)),
            "train_old": lambda p: train.pil(load_image(p, side)),
            "train_new": lambda p: train(decode_file(p, side)),
            "decode_old": lambda p: load_image(p, side),
            "decode_new": lambda p: decode_file(p, side),
        }, paths, reps)
        row = {f"{k}_img_s": 1e3 / v for k, v in ms.items()}
        for kind in ("eval", "train", "decode"):
            row[f"{kind}_speedup"] = ms[f"{kind}_old"] / ms[f"{kind}_new"]
        rows[str(size)] = {"decode_side": side, **row}
    return rows


def bench_decode(n, reps, rrc_scale_min, tmp):
    """Images/s on one core of 500 x 375 JPEGs, old (Pillow) against new (decode_file), per input size."""
    paths = write_photos(os.path.join(tmp, "decode"), (500, 375), n)
    detailed = write_photos(os.path.join(tmp, "decode_detailed"), (500, 375), n, seed=1, grain=8.0, quality=95)
    torch.manual_seed(0)
    return {"images": n, "size": [500, 375], "bytes_per_pixel": bytes_per_pixel(paths, (500, 375)),
            "by_input_size": one_core(_decode_rates, paths, reps, rrc_scale_min),
            "detailed": {"quality": 95, "grain": 8.0, "bytes_per_pixel": bytes_per_pixel(detailed, (500, 375)),
                         "by_input_size": one_core(_decode_rates, detailed, reps, rrc_scale_min, (224,))}}


def _crossover_rows(groups, reps):
    rows = []
    for (w, h), paths in groups:
        for side in CROSSOVER_SIDES:
            ms = per_image_ms({"pil_draft": lambda p: load_image(p, side),
                               "decode_jpeg": lambda p: jpeg_tensor(read_bytes(p), side)}, paths, reps)
            scale = draft_scale((w, h), side)
            faster = min(ms, key=ms.get)
            rule = "pil_draft" if scale >= DRAFT_MIN_SCALE else "decode_jpeg"
            rows.append({"size": [w, h], "decode_side": side, "draft_scale": scale, "pil_draft_ms": ms["pil_draft"],
                         "decode_jpeg_ms": ms["decode_jpeg"], "faster": faster, "rule": rule,
                         "rule_agrees": faster == rule})
    return rows


def bench_crossover(pixels, reps, tmp):
    """Per JPEG size and decode_side: Pillow's draft decode against decode_jpeg + resize, one core."""
    groups = [((w, h), write_photos(os.path.join(tmp, f"cross_{w}"), (w, h), max(2, int(pixels / (w * h))), seed=w))
              for w, h in CROSSOVER_SIZES]
    return {"draft_min_scale": DRAFT_MIN_SCALE, "rows": one_core(_crossover_rows, groups, reps)}


def build_startup_tree(root, n, classes=100, distinct=256, seed=0):
    """n 64 x 64 JPEGs in `classes` folders (`distinct` different photographs, written round-robin)."""
    rng, sources = np.random.default_rng(seed), source_photos()
    blobs = [photo_bytes((64, 64), rng, sources) for _ in range(distinct)]
    for i in range(n):
        folder = os.path.join(root, f"class_{i % classes:03d}")
        if i < classes:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
            f.write(blobs[i % distinct])
    return root


def _startup_once(tree, cache_mb, **options):
    """(seconds, (paths, labels, images cached, CPU seconds of this process, CPU seconds of its workers))."""
    t0, cpu0 = time.perf_counter(), os.times()
    ds = ClusterDataset(tree, log=lambda m: None, cache_mb=cache_mb, decode_side=128, **options)
    seconds, cpu1 = time.perf_counter() - t0, os.times()
    listing = (ds.paths, ds.labels.tolist(), len(ds._cache), cpu1.user + cpu1.system - cpu0.user - cpu0.system,
               cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system)
    del ds
    gc.collect()
    return seconds, listing


def bench_startup(n, reps, cache_mb, tmp):
    """Seconds to scan and check a tree of n small JPEGs: before (Pillow, main process), decode_file in the
    main process, decode_file in one process per core."""
    t0 = time.perf_counter()
    tree = build_startup_tree(os.path.join(tmp, "startup"), n)
    build_s = time.perf_counter() - t0
    variants = {"old": {"check_workers": 0, "jpeg_decoder": "pil"}, "new": {}, "new_1_process": {"check_workers": 1}}
    best, listings = {name: float("inf") for name in variants}, {}
    scan_s, load = float("inf"), [os.getloadavg()[0]]
    for _ in range(reps):
        t0 = time.perf_counter()
        scan_tree(tree)
        scan_s = min(scan_s, time.perf_counter() - t0)
        for name, options in variants.items():
            seconds, listings[name] = _startup_once(tree, cache_mb, **options)
            best[name] = min(best[name], seconds)
        load.append(os.getloadavg()[0])
    same = all(listings[name][:2] == listings["old"][:2] for name in variants)
    return {"images": n, "image_size": [64, 64], "cache_mb": cache_mb, "build_tree_s": build_s, "scan_s": scan_s,
            **{f"{name}_s": s for name, s in best.items()}, "workers": check_worker_count(-1),
            "cached": listings["new"][2], "cached_old": listings["old"][2], "same_list": same,
            "main_process_cpu_s": listings["new"][3], "workers_cpu_s": listings["new"][4],
            "one_process_cpu_s": listings["new_1_process"][3], "old_cpu_s": listings["old"][3], "load_average": load,
            "speedup": best["old"] / best["new"], "speedup_1_process": best["old"] / best["new_1_process"]}


def print_decode(r):
    print(f"decode {r['images']} JPEGs of 500x375 ({r['bytes_per_pixel']:.2f} bytes/pixel), one core, "
          f"img/s old (Pillow) -> new (decode_file):")
    rows = [(f"input {s:>3} px (decode_side {row['decode_side']})", row) for s, row in r["by_input_size"].items()]
    d = r["detailed"]
    rows += [(f"more detail (quality {d['quality']}, {d['bytes_per_pixel']:.2f} bytes/pixel), input {s} px", row)
             for s, row in d["by_input_size"].items()]
    for name, row in rows:
        print(f"  {name}: " + ", ".join(
            f"{kind}{' alone' if kind == 'decode' else ''} {row[f'{kind}_old_img_s']:.0f} -> "
            f"{row[f'{kind}_new_img_s']:.0f} ({row[f'{kind}_speedup']:.2f}x)" for kind in ("eval", "train", "decode")))


def print_crossover(r):
    print(f"crossover (decode_file takes Pillow's draft decode from 1/{r['draft_min_scale']} scale on), ms per image, "
          f"one core:")
    for row in r["rows"]:
        print(f"  {row['size'][0]}x{row['size'][1]} decode_side {row['decode_side']} (draft 1/{row['draft_scale']}): "
              f"Pillow draft {row['pil_draft_ms']:.2f}, decode_jpeg + resize {row['decode_jpeg_ms']:.2f}; "
              f"faster {row['faster']}, rule takes {row['rule']}")


def print_startup(r):
    print(f"startup {r['images']} JPEGs of 64x64: scan {r['scan_s']:.1f} s; scan + check old (Pillow, main process) "
          f"{r['old_s']:.1f} s, new in 1 process {r['new_1_process_s']:.1f} s, new in {r['workers']} processes "
          f"{r['new_s']:.1f} s: {r['speedup']:.2f}x; same kept list {r['same_list']}, cached {r['cached']} "
          f"(old {r['cached_old']}) within cache_mb {r['cache_mb']}; CPU s: old {r['old_cpu_s']:.1f}, new in 1 "
          f"process {r['one_process_cpu_s']:.1f}, new main process {r['main_process_cpu_s']:.1f} + workers "
          f"{r['workers_cpu_s']:.1f}; "
          f"load average {', '.join(f'{x:.1f}' for x in r['load_average'])}")


def temporary_folder():
    """A temporary folder for the synthetic trees (removed when the returned object is cleaned up)."""
    return tempfile.TemporaryDirectory(prefix="deepcluster_bench_")
