"""tools/preresize.py: the pre-resized JPEG copy of an image tree."""
import os

import numpy as np
import pytest
from PIL import Image

from tools import preresize


def make_source(root):
    """root/cat: a.jpg 300x200, a.png 120x80 (the same output name), sub/b.tif 16-bit 200x150, e.jpg 100x150 whose
    EXIF says 'rotate 90'; root/dog: c.bmp 50x40 (below the short side), a text file, a zero-byte and a
    truncated image."""
    os.makedirs(root / "cat" / "sub")
    os.makedirs(root / "dog")
    Image.new("RGB", (300, 200), (200, 10, 10)).save(root / "cat" / "a.jpg", quality=95)
    Image.new("RGB", (120, 80), (10, 200, 10)).save(root / "cat" / "a.png")
    Image.fromarray((np.arange(150 * 200).reshape(150, 200) * 2).astype(np.uint16)).save(root / "cat" / "sub" / "b.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show
    Image.new("RGB", (100, 150), (10, 10, 200)).save(root / "cat" / "e.jpg", exif=exif)
    Image.new("L", (50, 40), 128).save(root / "dog" / "c.bmp")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "zero.png").write_bytes(b"")
    (root / "dog" / "bad.jpg").write_bytes((root / "cat" / "a.jpg").read_bytes()[:300])
    return root


def files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def run(capsys, *argv):
    result = preresize.main([str(a) for a in argv])
    return result, capsys.readouterr().out.splitlines()


def test_the_copy_mirrors_the_tree_reduced_never_enlarged(tmp_path, capsys):
    src, dst = make_source(tmp_path / "src"), tmp_path / "dst"
    result, lines = run(capsys, src, dst, "--short_side", 64, "--quality", 90, "--workers", 1)
    assert files(dst) == ["cat/a.jpg", "cat/a.png.jpg", "cat/e.jpg", "cat/sub/b.jpg", "dog/c.jpg"]
    sizes = {f: Image.open(dst / f).size for f in files(dst)}
    assert sizes == {"cat/a.jpg": (96, 64), "cat/a.png.jpg": (96, 64), "cat/e.jpg": (96, 64),  # e: upright
                     "cat/sub/b.jpg": (85, 64), "dog/c.jpg": (50, 40)}  # c: below 64, kept at its size
    assert all(Image.open(dst / f).format == "JPEG" and Image.open(dst / f).mode == "RGB" for f in files(dst))
    assert np.asarray(Image.open(dst / "cat" / "a.png.jpg"))[30, 40, 1] > 150  # the PNG's green, not the JPEG's red
    assert np.asarray(Image.open(dst / "cat" / "sub" / "b.jpg")).max() > 200  # 16-bit rescaled to 0..255
    unreadable = [line for line in lines if "skipped" in line]
    assert len(unreadable) == 2 and "bad.jpg' skipped: not a readable image" in unreadable[0]
    assert "zero.png' skipped" in unreadable[1]
    assert lines[-1].startswith("preresize: 5 written, 0 already done, 2 unreadable; sources ")
    assert result["written"] == 5 and result["unreadable"] == 2


def test_a_second_run_writes_nothing_and_a_touched_source_is_redone(tmp_path, capsys):
    src, dst = make_source(tmp_path / "src"), tmp_path / "dst"
    run(capsys, src, dst, "--short_side", 64, "--workers", 2)  # the pool
    first = {f: os.stat(dst / f).st_mtime_ns for f in files(dst)}
    result, lines = run(capsys, src, dst, "--short_side", 64, "--workers", 1)
    assert result["written"] == 0 and result["done"] == 5
    assert lines[-1].startswith("preresize: nothing written, 5 already done, 2 unreadable")
    assert {f: os.stat(dst / f).st_mtime_ns for f in files(dst)} == first
    later = os.stat(dst / "cat" / "a.jpg").st_mtime + 10
    os.utime(src / "cat" / "a.jpg", (later, later))
    (dst / "dog" / ".c.jpg.123.preresize-part").write_bytes(b"half")  # what a killed run leaves
    os.remove(dst / "dog" / "c.jpg")
    result, lines = run(capsys, src, dst, "--short_side", 64, "--workers", 1)
    assert result["written"] == 2 and result["done"] == 3
    assert files(dst) == sorted(first) and os.stat(dst / "cat" / "a.jpg").st_mtime_ns > first["cat/a.jpg"]


def test_output_names_keep_both_files_of_a_clash():
    names = preresize.output_names(["c/a.png", "c/a.jpg", "c/b.JPEG", "d/a.png", "c/x.PNG", "c/X.bmp"])
    assert names == {"c/a.png": "c/a.png.jpg", "c/a.jpg": "c/a.jpg", "c/b.JPEG": "c/b.jpg", "d/a.png": "d/a.jpg",
                     "c/x.PNG": "c/x.PNG.jpg", "c/X.bmp": "c/X.bmp.jpg"}
    # a source already named like another's fallback: that name is left out rather than overwritten
    assert preresize.output_names(["a.png", "a.jpg", "a.png.jpg"]) == {"a.jpg": "a.jpg"}


@pytest.mark.parametrize("args, message", [
    (["{t}/missing", "{t}/out"], "SRC '{t}/missing' does not exist"),
    (["{t}/src", "{t}/src/copy"], "is SRC or inside it"),
    (["{t}/src", "{t}/src"], "is SRC or inside it"),
    (["{t}/src", "{t}/out", "--short_side", "0"], "--short_side takes a number of pixels >= 1, got 0"),
    (["{t}/src", "{t}/out", "--quality", "0"], "--quality takes 1-95"),
    (["{t}/src", "{t}/out", "--quality", "96"], "--quality takes 1-95"),
    (["{t}/src", "{t}/out", "--workers", "0"], "--workers takes 1 or more"),
    (["{t}/src", "{t}/out", "--short_side", "big"], "invalid int value"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit) as e:
        preresize.main([a.format(t=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message.format(t=tmp_path) in err
    assert not (tmp_path / "out").exists()


def test_a_source_without_images_is_one_line(tmp_path):
    (tmp_path / "src" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(SystemExit, match="^data error: no images under ") as e:
        preresize.main([str(tmp_path / "src"), str(tmp_path / "out")])
    assert "\n" not in str(e.value.code)
