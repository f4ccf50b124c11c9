"""open_image_text: every image-text source as generator training data.

Real files written with PIL: imagefolder (jsonl, csv, custom caption column, subfolders, split
folders, a blob-store root), exact centre crops, bad records (raised with file and line, or
counted skips), category filters that select nothing, Winoground pairs split into two examples,
GQA-Captions shards from the real builder joined with their images, and determinism.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.data.gqa_captions import build_gqa_captions
from orchestrator.data.image_text import fit_square, open_image_text, shapes_data
from orchestrator.data.loaders import DataFormatError, loader_class, open_loader
from orchestrator.data.loaders.imagefolder import ImageFolderLoader
from orchestrator.manifest.schema import IMAGE_TEXT_KINDS, DataSource
from orchestrator.storage import open_store

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def source(base: Path | None = None, **fields) -> DataSource:
    """A manifest data source, validated as the manifest loader does (roots against `base`)."""
    context = {"base_dir": base} if base is not None else {"check_files": False}
    return DataSource.model_validate(fields, context=context)


def solid(path: Path, colour, size=(12, 8), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def write_jsonl(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def folder(tmp: Path, name: str = "faces") -> Path:
    """An imagefolder with images in subfolders and a jsonl metadata file."""
    root = tmp / name
    solid(root / "a/red.png", RED)
    solid(root / "b/deep/green.png", GREEN, size=(8, 12))
    solid(root / "blue.jpg", BLUE, fmt="JPEG")
    write_jsonl(root / "metadata.jsonl", [
        {"file_name": "a/red.png", "text": "a red  square", "kind": "warm"},
        {"file_name": "b/deep/green.png", "text": "a green square", "kind": "cool"},
        {"file_name": "blue.jpg", "text": "a blue square", "kind": "cool"},
    ])
    return root


def colours(data) -> list[tuple[int, int, int]]:
    """The colour at each image's centre."""
    h = data.images.shape[-1] // 2
    return [tuple(int(v) for v in data.images[i, :, h, h]) for i in range(len(data))]


def near(got, want, tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(got, want))


# ================================================================ imagefolder

def test_imagefolder_jsonl_with_subfolders(tmp_path: Path) -> None:
    folder(tmp_path)
    data = open_image_text(source(tmp_path, kind="imagefolder", root="faces"), 16, base_dir=tmp_path)
    assert data.images.shape == (3, 3, 16, 16) and data.images.dtype.is_floating_point is False
    assert data.captions == ["a red square", "a green square", "a blue square"]  # file order, spaces collapsed
    got = colours(data)
    assert got[:2] == [RED, GREEN] and near(got[2], BLUE)  # the JPEG is lossy
    assert not data.skips
    assert isinstance(open_loader(source(tmp_path, kind="imagefolder", root="faces"), tmp_path), ImageFolderLoader)


def test_imagefolder_csv_with_a_caption_column(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    solid(root / "x/one.png", YELLOW)
    solid(root / "two.png", BLUE)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "text", "prompt"])
        w.writerow(["x/one.png", "ignored", "a yellow, sunny square"])  # quoted comma
        w.writerow(["two.png", "ignored", "a blue square"])
    src = source(tmp_path, kind="imagefolder", root="ds", options={"caption_column": "prompt"})
    data = open_image_text(src, 8, base_dir=tmp_path)
    assert data.captions == ["a yellow, sunny square", "a blue square"]
    assert colours(data) == [YELLOW, BLUE]
    # The default column is `text`; a column the header lacks fails the file at its header.
    assert open_image_text(source(tmp_path, kind="imagefolder", root="ds"), 8, base_dir=tmp_path).captions == \
        ["ignored", "ignored"]
    with pytest.raises(DataFormatError) as err:
        open_image_text(source(tmp_path, kind="imagefolder", root="ds", options={"caption_column": "alt"}), 8,
                        base_dir=tmp_path)
    assert err.value.file == str(root / "metadata.csv") and err.value.line == 1 and "'alt'" in str(err.value)


def test_imagefolder_in_a_blob_store_matches_the_local_copy(tmp_path: Path) -> None:
    local = folder(tmp_path)
    store = open_store(str(tmp_path / "blobs"))
    for p in local.rglob("*"):
        if p.is_file():
            store.put(f"bench/faces/{p.relative_to(local).as_posix()}", p.read_bytes())
    # Not a local path: a prefix in the store handed in (the manifest's blobs).
    from_blobs = open_image_text(source(kind="imagefolder", root="bench/faces"), 16, base_dir=tmp_path, store=store)
    from_disk = open_image_text(source(tmp_path, kind="imagefolder", root="faces"), 16, base_dir=tmp_path)
    assert from_blobs.captions == from_disk.captions and from_blobs.content_hash == from_disk.content_hash
    store.delete("bench/faces/blue.jpg")
    with pytest.raises(DataFormatError, match=r"bench/faces/metadata.jsonl:3: image not found"):
        open_image_text(source(kind="imagefolder", root="bench/faces"), 16, base_dir=tmp_path, store=store)
    # An existing local path stays local even with a store given (as the trainer always gives one).
    local_too = open_image_text(source(tmp_path, kind="imagefolder", root="faces"), 16, base_dir=tmp_path,
                                store=store)
    assert local_too.content_hash == from_disk.content_hash


def test_imagefolder_metadata_file_and_split_folders(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (root / "metadata.csv").write_text("file_name,text\na/red.png,red\n")
    with pytest.raises(ValueError, match="both metadata.jsonl and metadata.csv"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces"), 8, base_dir=tmp_path)
    (root / "metadata.csv").unlink()
    (root / "metadata.jsonl").rename(root / "a" / "metadata.jsonl")
    write_jsonl(root / "a" / "metadata.jsonl", [{"file_name": "red.png", "text": "red in split a"}])
    # A split folder with a name that is no Hugging Face split: training must be told to read it.
    with pytest.raises(FileNotFoundError, match=r"training reads the train split, but .*faces has no folder for "
                                                r"it \(looked for train, training.*split folders: a \(choose"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces"), 8, base_dir=tmp_path)
    data = open_image_text(source(tmp_path, kind="imagefolder", root="faces", options={"split": "a"}), 8,
                           base_dir=tmp_path)
    assert data.captions == ["red in split a"] and colours(data) == [RED]  # file_name relative to the split
    with pytest.raises(FileNotFoundError, match=r"split 'test' not found under .*faces .*split folders: a$"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces", options={"split": "test"}), 8,
                        base_dir=tmp_path)


def split_folder(root: Path, split: str, colour, caption: str) -> None:
    solid(root / split / "images" / "x.png", colour)
    write_jsonl(root / split / "metadata.jsonl", [{"file_name": "images/x.png", "text": caption}])


def test_imagefolder_split_layout_trains_on_train_and_evaluates_on_test(tmp_path: Path) -> None:
    """Hugging Face's split layout (data/train/metadata.jsonl, data/test/...), as
    `load_dataset("imagefolder", data_dir=...)` reads it: data.train trains on train, data.eval
    reads test, through the manifest and the trial's own loading path."""
    from orchestrator.manifest import load_manifest
    from orchestrator.training.trial import load_train_data

    root = tmp_path / "data"
    split_folder(root, "train", RED, "a red training square")
    split_folder(root, "test", BLUE, "a blue test square")
    split_folder(root, "validation", GREEN, "a green validation square")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("name: hf\nmodel: {variant: sd}\ndata:\n  train: {kind: imagefolder, root: ./data}\n"
                        "  eval: {kind: imagefolder, root: ./data}\n")
    m = load_manifest(manifest).manifest
    train = load_train_data(m.data.train, 8, tmp_path, None)
    assert train.captions == ["a red training square"] and colours(train) == [RED]
    test = open_image_text(m.data.eval, 8, base_dir=tmp_path, role="eval")
    assert test.captions == ["a blue test square"] and colours(test) == [BLUE]
    assert [x.caption for x in open_loader(m.data.eval, tmp_path, role="eval")] == ["a blue test square"]
    # Without test, evaluation reads validation, by any of Hugging Face's names for it.
    (root / "test" / "metadata.jsonl").unlink()
    (root / "validation").rename(root / "val")
    assert open_image_text(m.data.eval, 8, base_dir=tmp_path, role="eval").captions == ["a green validation square"]
    # options.split wins, and takes a split name for the folder that stands for it.
    picked = source(tmp_path, kind="imagefolder", root="data", options={"split": "validation"})
    assert open_image_text(picked, 8, base_dir=tmp_path).captions == ["a green validation square"]
    # A caller that gives no role must name the split.
    with pytest.raises(FileNotFoundError, match=r"no metadata file under .*data; its split folders: train, val "
                                                r"\(choose one with options.split\)"):
        open_loader(m.data.eval, tmp_path).load()


def test_imagefolder_missing_split_and_a_root_metadata_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    split_folder(root, "train", RED, "train")
    src = source(tmp_path, kind="imagefolder", root="data")
    with pytest.raises(FileNotFoundError, match=r"evaluation reads the test or validation split, but .*data has no "
                                                r"folder for it \(looked for test, testing, eval, evaluation, "
                                                r"validation, valid, val, dev.*split folders: train \("):
        open_image_text(src, 8, base_dir=tmp_path, role="eval")
    split_folder(root, "training", GREEN, "training")  # two names for one split: a guess, refused
    with pytest.raises(ValueError, match=r"several folders under .*data hold the train split: train, training"):
        open_image_text(src, 8, base_dir=tmp_path)
    # The root's own metadata file wins over split folders, for training and evaluation alike.
    solid(root / "top.png", YELLOW)
    write_jsonl(root / "metadata.jsonl", [{"file_name": "top.png", "text": "the root's own"}])
    for role in ("train", "eval"):
        assert open_image_text(src, 8, base_dir=tmp_path, role=role).captions == ["the root's own"]
    named = source(tmp_path, kind="imagefolder", root="data", options={"split": "training"})
    assert open_image_text(named, 8, base_dir=tmp_path).captions == ["training"]


def bad_folder(tmp: Path) -> Path:
    root = tmp / "bad"
    solid(root / "ok1.png", RED)
    solid(root / "ok2.png", GREEN)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines = [
        json.dumps({"file_name": "ok1.png", "text": "first"}),        # 1
        json.dumps({"file_name": "gone.png", "text": "missing"}),     # 2 missing image
        '{"file_name": "ok2.png", "text": ',                          # 3 bad JSON
        json.dumps({"file_name": "ok2.png", "text": "  "}),           # 4 empty caption
        json.dumps({"file_name": "ok2.png"}),                         # 5 no caption
        json.dumps({"file_name": "broken.png", "text": "broken"}),    # 6 unreadable image
        json.dumps({"file_name": "ok2.png", "text": "last"}),         # 7
    ]
    data = ("\n".join(lines) + "\n").encode()
    data += b'{"file_name": "ok1.png", "text": "caf\xe9"}\n'         # 8 Latin-1, not UTF-8
    (root / "metadata.jsonl").write_bytes(data)
    return root


@pytest.mark.parametrize("line, bad_lines", [(2, []), (3, [2]), (4, [2, 3]), (5, [2, 3, 4]), (6, [2, 3, 4, 5]),
                                             (8, [2, 3, 4, 5, 6])])
def test_imagefolder_bad_records_name_file_and_line(tmp_path: Path, line: int, bad_lines: list[int]) -> None:
    root = bad_folder(tmp_path)
    # Drop the earlier bad lines so each case reaches the one it checks.
    kept = [x for i, x in enumerate((root / "metadata.jsonl").read_bytes().splitlines(keepends=True), 1)
            if i not in bad_lines]
    (root / "metadata.jsonl").write_bytes(b"".join(kept))
    expect_line = line - len(bad_lines)
    with pytest.raises(DataFormatError) as err:
        open_image_text(source(tmp_path, kind="imagefolder", root="bad"), 8, base_dir=tmp_path)
    assert err.value.file == str(root / "metadata.jsonl") and err.value.line == expect_line
    reason = {2: "image not found", 3: "not a JSON object", 4: "empty caption", 5: "empty caption",
              6: "unreadable image", 8: "not UTF-8"}[line]
    assert reason in err.value.message


def test_imagefolder_skip_counts_bad_records(tmp_path: Path) -> None:
    bad_folder(tmp_path)
    data = open_image_text(source(tmp_path, kind="imagefolder", root="bad", on_error="skip"), 8, base_dir=tmp_path)
    assert data.captions == ["first", "last"] and colours(data) == [RED, GREEN]
    assert data.skips.counts == {"missing image": 1, "bad JSON line": 1, "bad caption": 2, "unreadable image": 1,
                                 "not UTF-8": 1}
    # n counts kept examples: the bad ones before the second good one do not use it up.
    assert open_image_text(source(tmp_path, kind="imagefolder", root="bad", on_error="skip", n=2), 8,
                           base_dir=tmp_path).captions == ["first", "last"]


def test_csv_non_utf8_row_is_one_bad_line(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    solid(root / "a.png", RED)
    (root / "metadata.csv").write_bytes(b"file_name,text\na.png,ok\na.png,caf\xe9\na.png,fine\n")
    with pytest.raises(DataFormatError) as err:
        open_image_text(source(tmp_path, kind="imagefolder", root="ds"), 8, base_dir=tmp_path)
    assert err.value.line == 3 and "not UTF-8" in err.value.message
    data = open_image_text(source(tmp_path, kind="imagefolder", root="ds", on_error="skip"), 8, base_dir=tmp_path)
    assert data.captions == ["ok", "fine"] and data.skips.counts == {"not UTF-8": 1}


def test_every_record_bad_is_an_error_naming_the_source(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    write_jsonl(root / "metadata.jsonl", [{"file_name": "gone.png", "text": "x"}])
    with pytest.raises(ValueError, match=r"'imagefolder' at .*ds gave no examples \(skipped 1 record"):
        open_image_text(source(tmp_path, kind="imagefolder", root="ds", on_error="skip"), 8, base_dir=tmp_path)


def test_imagefolder_categories(tmp_path: Path) -> None:
    folder(tmp_path)
    opts = {"category_column": "kind"}
    data = open_image_text(source(tmp_path, kind="imagefolder", root="faces", categories=["COOL"], options=opts), 8,
                           base_dir=tmp_path)
    assert data.captions == ["a green square", "a blue square"]
    with pytest.raises(ValueError, match=r"categories \['hot'\] match nothing.*the data has: cool, warm"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces", categories=["hot"], options=opts), 8,
                        base_dir=tmp_path)
    # One real value and one typo: still an error (the typo would silently drop data).
    with pytest.raises(ValueError, match=r"\['coool'\] match nothing; the data has: cool, warm"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces", categories=["warm", "coool"],
                               options=opts), 8, base_dir=tmp_path)
    with pytest.raises(ValueError, match="categories need options.category_column"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces", categories=["cool"]), 8,
                        base_dir=tmp_path)


def test_unknown_options_and_kinds_are_refused(tmp_path: Path) -> None:
    folder(tmp_path)
    with pytest.raises(ValueError, match="unsupported option"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces", options={"caption": "x"}), 8,
                        base_dir=tmp_path)
    with pytest.raises(ValueError, match=r"'drawbench' cannot train a generator.*imagefolder"):
        open_image_text(source(kind="drawbench", root="x"), 8)
    with pytest.raises(ValueError, match="one caption per image"):
        open_image_text(source(tmp_path, kind="imagefolder", root="faces", captions="spatial"), 8, base_dir=tmp_path)
    for kind in ("gqa", "shards", "comvg"):  # benchmarks without an image-caption pairing
        with pytest.raises(ValueError, match=f"{kind!r} cannot train a generator"):
            open_image_text(source(kind=kind, root="x"), 8)
    with pytest.raises(ValueError, match="'shapes-winoground' cannot train"):
        open_image_text(source(kind="shapes-winoground", n=2), 8)
    assert all(loader_class(k).kind == k for k in IMAGE_TEXT_KINDS if k != "shapes")  # all registered


# ================================================================ pixels

def bands(w: int, h: int, cols: list[tuple[int, tuple]]) -> Image.Image:
    """Vertical bands: (width, colour) left to right."""
    img = Image.new("RGB", (w, h))
    x = 0
    for width, colour in cols:
        img.paste(colour, (x, 0, x + width, h))
        x += width
    return img


def test_centre_crop_is_exact() -> None:
    # 90x30 -> 30x30: the middle third, red on the left half and blue on the right; no green.
    img = bands(90, 30, [(30, GREEN), (15, RED), (15, BLUE), (30, GREEN)])
    out = fit_square(img, 30)
    assert out.shape == (30, 30, 3)
    assert (out[:, :15] == RED).all() and (out[:, 15:] == BLUE).all()
    # Portrait: the middle third of the rows.
    tall = bands(90, 30, [(30, GREEN), (15, RED), (15, BLUE), (30, GREEN)]).transpose(Image.Transpose.TRANSPOSE)
    out = fit_square(tall, 30)
    assert (out[:15] == RED).all() and (out[15:] == BLUE).all()


def test_resize_then_crop() -> None:
    # 180x60 -> short side 30 (90x30) -> middle 30 columns; away from the edges bicubic is exact.
    out = fit_square(bands(180, 60, [(60, GREEN), (30, RED), (30, BLUE), (60, GREEN)]), 30).astype(int)
    assert out.shape == (30, 30, 3)
    assert np.abs(out[:, 2:12] - RED).max() <= 2 and np.abs(out[:, 18:28] - BLUE).max() <= 2
    # Green only bleeds into the edge columns through the kernel's tails; a crop one pixel off
    # would put a green column there.
    assert out[:, 1:29, 1].max() <= 2 and out[:, [0, 29], 1].max() < 40
    # Upscaling a small image too: 10x5 -> 40x20 -> the middle 20 columns.
    small = fit_square(bands(10, 5, [(5, RED), (5, BLUE)]), 20).astype(int)
    assert small.shape == (20, 20, 3) and near(small[10, 1], RED, 4) and near(small[10, 18], BLUE, 4)


def test_large_jpeg_and_modes(tmp_path: Path) -> None:
    # A big JPEG comes out at the target size; grey, palette and alpha images become RGB.
    buf = io.BytesIO()
    bands(1600, 800, [(800, RED), (800, BLUE)]).save(buf, format="JPEG", quality=95)
    out = fit_square(Image.open(io.BytesIO(buf.getvalue())), 16).astype(int)
    assert out.shape == (16, 16, 3) and near(out[8, 2], RED, 20) and near(out[8, 13], BLUE, 20)
    for img in (Image.new("L", (6, 6), 128), Image.new("RGBA", (6, 6), (0, 255, 0, 40)),
                Image.new("RGB", (6, 6), YELLOW).convert("P")):
        px = fit_square(img, 4)
        assert px.shape == (4, 4, 3) and px.dtype == np.uint8


# ================================================================ determinism

def test_content_hash_is_deterministic_and_tracks_content(tmp_path: Path) -> None:
    root = folder(tmp_path)
    src = source(tmp_path, kind="imagefolder", root="faces")
    a = open_image_text(src, 16, base_dir=tmp_path)
    b = open_image_text(src, 16, base_dir=tmp_path)
    assert a.content_hash == b.content_hash and a.images.equal(b.images)
    assert open_image_text(src, 8, base_dir=tmp_path).content_hash != a.content_hash  # resolution matters
    solid(root / "a/red.png", (250, 0, 0))
    assert open_image_text(src, 16, base_dir=tmp_path).content_hash != a.content_hash


def test_n_takes_the_first_examples_and_shapes_still_work(tmp_path: Path) -> None:
    folder(tmp_path)
    data = open_image_text(source(tmp_path, kind="imagefolder", root="faces", n=2), 8, base_dir=tmp_path)
    assert data.captions == ["a red square", "a green square"]
    shapes = open_image_text(source(kind="shapes", n=3, captions="spatial", seed=1, random_flip=True), 32)
    assert shapes.images.shape == (3, 3, 32, 32) and len(shapes.captions) == 3
    assert shapes.content_hash == shapes_data(3, seed=1, size=32, caption="spatial").content_hash  # as before
    assert shapes.random_flip  # carried for the objective to draw per step, not applied to the data
    with pytest.raises(ValueError, match="no categories"):
        open_image_text(source(kind="shapes", n=3, categories=["x"]), 32)


# ================================================================ Winoground

WINO_COLOURS = {"ex_0_img_0": RED, "ex_0_img_1": GREEN, "ex_1_img_0": BLUE, "ex_1_img_1": YELLOW}


def winoground(tmp: Path) -> Path:
    root = tmp / "winoground"
    for stem, colour in WINO_COLOURS.items():
        solid(root / "images" / f"{stem}.png", colour)
    write_jsonl(root / "examples.jsonl", [
        {"id": i, "caption_0": f"pair {i} caption 0", "caption_1": f"pair {i} caption 1",
         "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "tag": tag, "secondary_tag": "",
         "num_main_preds": 1, "collapsed_tag": tag}
        for i, tag in enumerate(["Relation", "Object"])])
    return root


def test_winoground_pairs_become_two_examples(tmp_path: Path) -> None:
    winoground(tmp_path)
    data = open_image_text(source(tmp_path, kind="winoground", root="winoground"), 8, base_dir=tmp_path)
    assert data.captions == ["pair 0 caption 0", "pair 0 caption 1", "pair 1 caption 0", "pair 1 caption 1"]
    assert colours(data) == [RED, GREEN, BLUE, YELLOW]  # each caption with its own image
    only = open_image_text(source(tmp_path, kind="winoground", root="winoground", categories=["object"]), 8,
                           base_dir=tmp_path)
    assert only.captions == ["pair 1 caption 0", "pair 1 caption 1"] and colours(only) == [BLUE, YELLOW]
    assert len(open_image_text(source(tmp_path, kind="winoground", root="winoground", n=3), 8,
                               base_dir=tmp_path)) == 3
    with pytest.raises(ValueError, match=r"\['Both'\] match nothing \(no examples selected\); the data has: "
                                         r"Object, Relation"):
        open_image_text(source(tmp_path, kind="winoground", root="winoground", categories=["Both"]), 8,
                        base_dir=tmp_path)


def test_winoground_parquet_layout(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def img(colour) -> dict:
        buf = io.BytesIO()
        Image.new("RGB", (6, 6), colour).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    rows = [{"id": 0, "caption_0": "c0", "caption_1": "c1", "image_0": img(RED), "image_1": img(BLUE),
             "tag": "Object", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}]
    (tmp_path / "wg" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "wg" / "data" / "test-00000-of-00001.parquet")
    data = open_image_text(source(tmp_path, kind="winoground", root="wg"), 6, base_dir=tmp_path)
    assert data.captions == ["c0", "c1"] and colours(data) == [RED, BLUE]


# ================================================================ GQA-Captions

GQA_COLOURS = {"2300000": RED, "2300001": GREEN, "2300002": BLUE}


def write_gqa(tmp: Path) -> tuple[Path, Path]:
    """Three scene graphs and questions of each selected type (plus an unselected colour one)."""
    graphs = {img: {"width": 100, "height": 80, "objects": {
        f"{k}1": {"name": "cup", "x": 5, "y": 5, "w": 20, "h": 20, "attributes": ["red"],
                  "relations": [{"name": "to the left of", "object": f"{k}2"}]},
        f"{k}2": {"name": "table", "x": 60, "y": 30, "w": 30, "h": 30, "attributes": [], "relations": []}}}
        for k, img in enumerate(GQA_COLOURS)}
    types = [("rel", "relS"), ("attr", "positionQuery"), ("obj", "exist"), ("attr", "colorQuery")]
    questions = {}
    for n, (img, (semantic, detailed)) in enumerate((img, t) for img in GQA_COLOURS for t in types):
        k = list(GQA_COLOURS).index(img)
        questions[str(1000 + n)] = {
            "imageId": img, "question": f"Question {n}?", "answer": "yes", "fullAnswer": "Yes.",
            "isBalanced": True, "semantic": [], "types": {"structural": "verify", "semantic": semantic,
                                                         "detailed": detailed},
            "annotations": {"question": {"2": f"{k}1"}, "answer": {}, "fullAnswer": {}}}
    sg, q = tmp / "val_sceneGraphs.json", tmp / "val_balanced_questions.json"
    sg.write_text(json.dumps(graphs))
    q.write_text(json.dumps(questions, indent=1))
    return sg, q


def test_gqa_captions_joined_with_their_images(tmp_path: Path) -> None:
    sg, q = write_gqa(tmp_path)
    summary = build_gqa_captions(sg, q, str(tmp_path / "gqa-captions"), examples_per_shard=4, progress=False)
    assert summary["records"] == 9  # 3 selected types x 3 images
    for img, colour in GQA_COLOURS.items():
        solid(tmp_path / "gqa" / "images" / f"{img}.jpg", colour, size=(20, 16), fmt="JPEG")
    # The images folder, relative to the manifest's directory (base_dir).
    src = source(tmp_path, kind="gqa-captions", root="gqa-captions", options={"images": "gqa/images"})
    # A local shard store, read as one even with the manifest's blob store handed in.
    data = open_image_text(src, 8, base_dir=tmp_path, store=open_store(str(tmp_path / "blobs")))
    records = list(open_loader(src, tmp_path))
    assert data.captions == [r.caption for r in records] and len(data) == 9
    assert all(near(c, GQA_COLOURS[r.image_id]) for c, r in zip(colours(data), records))
    assert any("left of" in c for c in data.captions)  # the builder's focused captions

    pos = open_image_text(source(tmp_path, kind="gqa-captions", root="gqa-captions", categories=["position"],
                                 options={"images": "gqa/images"}), 8, base_dir=tmp_path)
    assert len(pos) == 3 and pos.captions == [r.caption for r in records if r.question_type == "position"]
    with pytest.raises(ValueError, match=r"\['colour'\] match nothing.*the data has: existence, position, relation"):
        open_image_text(source(tmp_path, kind="gqa-captions", root="gqa-captions", categories=["colour"],
                               options={"images": "gqa/images"}), 8, base_dir=tmp_path)
    # The builder writes one caption style: asking for another says what is there.
    with pytest.raises(ValueError, match=r"no 'spatial' caption; the shards hold: caption"):
        open_image_text(source(tmp_path, kind="gqa-captions", root="gqa-captions", captions="spatial",
                               options={"images": "gqa/images"}), 8, base_dir=tmp_path)
    (tmp_path / "gqa" / "images" / "2300001.jpg").unlink()
    with pytest.raises(DataFormatError, match="image not found"):
        open_image_text(src, 8, base_dir=tmp_path)
    skipped = open_image_text(source(tmp_path, kind="gqa-captions", root="gqa-captions", on_error="skip",
                                     options={"images": "gqa/images"}), 8, base_dir=tmp_path)
    assert len(skipped) == 6 and skipped.skips.counts == {"missing image": 3}
