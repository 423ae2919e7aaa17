"""pred_dir as pred.py keeps it safe: it deletes nothing it did not write, and a killed run leaves the previous
prediction as it was.

A prediction is written into a hidden staging folder beside pred_dir, listed in a manifest (the files it wrote)
and only then swapped into pred_dir's place; an earlier prediction there is removed by its manifest, so a file
of someone else's stops the run instead. One process at a time holds pred_dir (a lock beside it).
"""
import contextlib
import glob
import json
import os
import shutil

from checkpoint import hold_lock
from dataset import PRED_MANIFEST as MANIFEST
from errors import PredError, printable

STAGING_MARK = ".pred_staging"  # in a staging folder until it is complete


@contextlib.contextmanager
def held(pred_dir):
    """pred_dir for this process until the block ends (checkpoint.hold_lock on a lock beside it), once it is known
    to be new, empty or an earlier prediction (check_pred_dir) and what a killed run left beside it is gone.
    Raises errors.BusyError (one line naming the holder) when another process holds it, errors.PredError as
    check_pred_dir."""
    with hold_lock(beside(pred_dir, "lock"), pred_dir, "pred_dir"):
        check_pred_dir(pred_dir)
        remove_stale_siblings(pred_dir)
        yield


def open_staging(pred_dir):
    """A new, marked staging folder beside pred_dir, for this process; returns its path."""
    staging = beside(pred_dir, f"tmp-{os.getpid()}")
    os.makedirs(staging)
    open(os.path.join(staging, STAGING_MARK), "w").close()
    return staging


def publish(staging, pred_dir):
    """The finished staging folder becomes pred_dir: its manifest written, then swapped in."""
    write_manifest(staging)
    swap_in(staging, pred_dir)


def owned_files(folder):
    """The files and links pred.py listed in folder's manifest, as paths inside folder; entries that
    would lead outside it (absolute, or through "..") are ignored."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            listed = json.load(f).get("files", [])
    except (ValueError, AttributeError):  # not JSON, or not the object pred.py writes
        raise PredError(f"the manifest of '{printable(folder)}' is damaged, so pred.py cannot tell its own files "
                        "from others; move the folder away or choose another --pred_dir (nothing was deleted)") from None
    inside = [os.path.normpath(rel) for rel in listed if isinstance(rel, str)]
    return {rel for rel in inside if not os.path.isabs(rel) and rel != ".." and not rel.startswith(".." + os.sep)}


def check_pred_dir(pred_dir):
    """pred_dir may be new, empty or an earlier prediction of ours; anything else stops us (nothing deleted)."""
    if os.path.exists(pred_dir) and not os.path.isdir(pred_dir):
        raise PredError(f"pred_dir '{printable(pred_dir)}' exists and is not a folder")
    entries = sorted(os.listdir(pred_dir)) if os.path.isdir(pred_dir) else []
    if not entries:
        return
    if not os.path.exists(os.path.join(pred_dir, MANIFEST)):
        raise PredError(f"pred_dir '{printable(pred_dir)}' is not empty and was not written by pred.py "
                        f"(it holds '{printable(entries[0])}'); choose another --pred_dir")
    owned = owned_files(pred_dir)
    for rel in listed_files(pred_dir):
        if rel not in owned:
            raise PredError(f"'{printable(os.path.join(pred_dir, rel))}' was not written by pred.py; move it away "
                            "or choose another --pred_dir (nothing was deleted)")


def listed_files(folder):
    """Every file and link below folder (links to folders included, not followed), relative, manifest excluded."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel not in (MANIFEST, STAGING_MARK):
                files.append(rel)
    return sorted(files)


def remove_prediction(folder):
    """Delete what pred.py wrote into folder (by its manifest), then the folders it left empty."""
    if os.path.exists(os.path.join(folder, MANIFEST)):
        for rel in owned_files(folder):
            path = os.path.join(folder, rel)
            if os.path.islink(path) or os.path.isfile(path):
                os.remove(path)
        os.remove(os.path.join(folder, MANIFEST))
    elif os.path.exists(os.path.join(folder, STAGING_MARK)):  # an unfinished staging folder: all ours
        shutil.rmtree(folder)
        return
    for dirpath, _, _ in sorted(os.walk(folder), reverse=True):
        if not os.listdir(dirpath):
            os.rmdir(dirpath)


def beside(pred_dir, suffix):
    """A hidden sibling of pred_dir: its lock, its staging folder, the old prediction during the swap."""
    parent, name = os.path.split(os.path.abspath(pred_dir))
    return os.path.join(parent, f".{name}.{suffix}")


def remove_stale_siblings(pred_dir):
    """Staging folders and swapped-out predictions that a killed pred.py left beside pred_dir."""
    for folder in glob.glob(glob.escape(beside(pred_dir, "")) + "*-*"):
        if os.path.isdir(folder) and not os.path.islink(folder):
            remove_prediction(folder)


def swap_in(staging, pred_dir):
    """Put the finished staging folder in pred_dir's place; an earlier prediction there is removed."""
    if os.path.exists(pred_dir):
        old = beside(pred_dir, f"old-{os.getpid()}")
        os.rename(pred_dir, old)
        os.rename(staging, pred_dir)
        remove_prediction(old)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(pred_dir)), exist_ok=True)
        os.rename(staging, pred_dir)


def write_manifest(folder):
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"files": listed_files(folder)}, f, indent=0)
    os.remove(os.path.join(folder, STAGING_MARK))
