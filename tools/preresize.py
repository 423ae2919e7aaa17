"""A pre-resized JPEG copy of an image tree, so that every later pass decodes small files.

    python tools/preresize.py SRC DST [--short_side 256] [--quality 90] [--workers N]

Every image that the dataset scan lists under SRC (dataset.scan_tree: the same extensions, class folders and
links) is decoded as training decodes it with Pillow (decoding.load_image: EXIF orientation applied, any mode
to 8-bit RGB, 16-bit and float images rescaled, a large JPEG decoded at a reduced scale), its short side reduced
to --short_side pixels with an antialiased resize (never enlarged: a smaller image keeps its size), and written
as a JPEG of --quality to DST/<the same relative path with the extension .jpg>. Two files of one folder that
would get the same name (a.png and a.jpg) both stay: the one that is not already a .jpg gets its extension kept
(a.png.jpg).

Resumable: an output newer than its source is not written again, and every output is written to a hidden
temporary name in its folder first and then renamed, so a run stopped at any point leaves no half-written
image. Files that do not decode are named on one line each and counted; the run goes on without them.
"""
import argparse
import multiprocessing
import os
import signal
import sys
import warnings

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dataset import scan_tree  # noqa: E402
from decoding import ImageTooLarge, load_image  # noqa: E402
from distributed import usable_cores  # noqa: E402
from errors import DataError, UserError, counted, printable  # noqa: E402
from progress import Bar  # noqa: E402

TMP_SUFFIX = ".preresize-part"  # a hidden '.<name>.<pid>' + this: what a stopped run may leave, removed by the next


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    """The arguments, checked. Exits with status 2 and one line on stderr for a bad one: SRC not a folder,
    DST equal to SRC or inside it, --short_side below 1, --quality outside 1-95, --workers below 1."""
    p = _Parser(prog="preresize.py", description=__doc__.split("\n\n")[0])
    p.add_argument("src", metavar="SRC", help="the image tree to copy (class folders or a flat folder)")
    p.add_argument("dst", metavar="DST", help="where the copy goes (made when missing); not inside SRC")
    p.add_argument("--short_side", type=int, default=256, help="short side of the copies in pixels (default 256)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality 1-95 (default 90)")
    p.add_argument("--workers", type=int, default=None, help="processes that convert (default: the usable cores)")
    a = p.parse_args(argv)
    if not os.path.isdir(a.src):
        p.error(f"SRC '{printable(a.src)}' is not a folder" if os.path.exists(a.src)
                else f"SRC '{printable(a.src)}' does not exist")
    src, dst = os.path.realpath(a.src), os.path.realpath(a.dst)
    if os.path.commonpath([src, dst]) == src:
        p.error(f"DST '{printable(a.dst)}' is SRC or inside it: the copy would be scanned as source images")
    if a.short_side < 1:
        p.error(f"--short_side takes a number of pixels >= 1, got {a.short_side}")
    if not 1 <= a.quality <= 95:
        p.error(f"--quality takes 1-95 (Pillow's range for JPEG), got {a.quality}")
    if a.workers is None:
        a.workers = usable_cores()
    elif a.workers < 1:
        p.error(f"--workers takes 1 or more, got {a.workers}")
    return a


def output_names(rels):
    """{source path relative to SRC: output path relative to DST} for the listed sources: the extension
    replaced by .jpg; where several sources of a folder would get one name (compared without case, so that the
    copy also works on a case-insensitive disk), those whose extension is not exactly .jpg keep it before the
    .jpg (a.png -> a.png.jpg). A name still taken after that (a source a.png.jpg beside a.png and a.jpg) is
    left out of the result: the caller reports those sources as not copied."""
    plain = {rel: os.path.splitext(rel)[0] + ".jpg" for rel in rels}
    users = {}
    for rel, out in plain.items():
        users.setdefault(out.casefold(), []).append(rel)
    names = {rel: plain[rel] if len(users[plain[rel].casefold()]) == 1 or rel.endswith(".jpg") else rel + ".jpg"
             for rel in rels}
    taken = {}
    for rel in sorted(rels):
        taken.setdefault(names[rel].casefold(), []).append(rel)
    return {rel: out for rel, out in names.items() if len(taken[out.casefold()]) == 1}


def _is_done(src, dst):
    """(output up to date: it exists and is newer than its source, its bytes or 0, the source's bytes)."""
    try:
        s = os.stat(src)
    except OSError:  # a broken link: converting it names it as unreadable
        return False, 0, 0
    try:
        d = os.stat(dst)
    except OSError:
        return False, 0, s.st_size
    return d.st_mtime_ns > s.st_mtime_ns, d.st_size, s.st_size


def convert(task):
    """In a worker: decode task's (source path, output path, short side in pixels, JPEG quality), write the
    output atomically (a temporary name in its folder, then os.replace). Returns (source path, (source bytes,
    output bytes) or None when the source does not decode, why it does not decode or None, [warning lines]).
    Raises OSError when the output cannot be written (the temporary file is removed)."""
    src, dst, side, quality = task
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = load_image(src, side)
        except ImageTooLarge as e:
            return src, None, str(e), []
        except Exception:  # any decoder failure means "skip this file"
            return src, None, "not a readable image", []
    folder, name = os.path.split(dst)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        img.save(tmp, "JPEG", quality=quality)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return src, (os.path.getsize(src), os.path.getsize(dst)), None, [str(w.message) for w in caught]


def _init_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process, which stops the pool
    try:
        import torch  # decoding.py imports it; one process per core already
        torch.set_num_threads(1)
    except ImportError:
        pass


def remove_leftovers(folders):
    """Remove the temporary files that a stopped run left in `folders` (absolute paths); returns how many."""
    n = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                os.remove(os.path.join(folder, name))
                n += 1
    return n


def plan(src_root, dst_root, log):
    """(tasks to convert as (source, output) absolute paths, [(source bytes, output bytes)] of the outputs
    already up to date, sources left out for a name clash). Raises DataError when SRC holds no image."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples, _ = scan_tree(src_root, exclude=(dst_root,), log=log, what="SRC")
    for w in caught:
        log(f"note: {w.message}")
    if not samples:
        raise DataError(f"no images under '{printable(src_root)}' (the extensions the dataset scan reads)")
    rels = [os.path.relpath(path, src_root) for path, _ in samples]
    names = output_names(rels)
    todo, done = [], []
    for rel in rels:
        if rel in names:
            src, dst = os.path.join(src_root, rel), os.path.join(dst_root, names[rel])
            up_to_date, dst_bytes, src_bytes = _is_done(src, dst)
            if up_to_date:
                done.append((src_bytes, dst_bytes))
            else:
                todo.append((src, dst))
    clashes = [rel for rel in rels if rel not in names]
    return todo, done, clashes


def run_all(tasks, workers):
    """Yields convert's result for every task (any order), with a progress bar; in `workers` forked processes
    (a multiprocessing Pool, tasks sent in chunks) when more than one, else here."""
    if workers <= 1 or len(tasks) < 2:
        results, pool = map(convert, tasks), None
    else:
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(tasks)), initializer=_init_worker)
        results = pool.imap_unordered(convert, tasks, chunksize=max(1, min(64, len(tasks) // (8 * workers))))
    bar = Bar(results, "preresize", total=len(tasks), unit="img")
    try:
        yield from bar
        if pool:
            pool.close()
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()


def _size(n):
    """Bytes as text: '812 B', '4.6 KB', '3.1 MB', '1.2 GB' (powers of 1,000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def summary(written, done, unreadable, clashes):
    """The closing line: files written, already done, unreadable and left out, and the bytes of their sources
    against the copy's. `written` and `done` are lists of (source bytes, output bytes)."""
    pairs = written + done
    before, after = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    share = f" ({100 * after / before:.1f}%)" if before else ""
    clash = f", {counted(clashes, 'name clash')} left out" if clashes else ""
    head = f"{len(written)} written" if written else "nothing written"
    return (f"preresize: {head}, {len(done)} already done, {unreadable} unreadable{clash}; "
            f"sources {_size(before)} -> copy {_size(after)}{share} for the {len(pairs)} images in the copy")


def main(argv=None):
    """Write the copy (see the module's text); prints one line per unreadable file and a closing summary, and
    returns the counts {"written", "done", "unreadable", "clashes"} (files). Exits with status 2 for bad arguments, 1 (a UserError's one line) for a SRC without images or an output that
    cannot be written."""
    a = parse_args(argv)
    src_root, dst_root = os.path.abspath(a.src), os.path.abspath(a.dst)
    todo, done, clashes = plan(src_root, dst_root, print)
    for rel in clashes:
        print(f"'{printable(rel)}' left out: its output name is taken by another file of its folder")
    remove_leftovers({os.path.dirname(dst) for _, dst in todo})
    tasks = [(src, dst, a.short_side, a.quality) for src, dst in todo]
    written, unreadable = [], 0
    try:
        for src, sizes, why, notes in run_all(tasks, a.workers):
            for note in notes:
                tqdm.write(f"note: {note}")
            if sizes is None:
                unreadable += 1
                tqdm.write(f"'{printable(src)}' skipped: {why}")
            else:
                written.append(sizes)
    except OSError as e:
        where = f" '{printable(e.filename)}'" if e.filename else ""
        raise UserError(f"cannot write the copy{where}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        raise UserError(f"stopped; {len(written)} of {len(tasks)} written (run again to go on)") from None
    print(summary(written, done, unreadable, len(clashes)))
    return {"written": len(written), "done": len(done), "unreadable": unreadable, "clashes": len(clashes)}


if __name__ == "__main__":
    main()
