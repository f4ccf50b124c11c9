"""Benchmark loaders on small fixtures written in each official layout, malformed variants
included (errors name file + line; on_error: skip counts and reports), and the streaming
JSON reader behind the GQA loader (equality with json.load, spans, errors, bounded memory)."""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import pickle
import tracemalloc
from pathlib import Path

import pytest
import yaml
from PIL import Image

from benchmarks.bench_gqa_stream import write_gqa_scene_graphs
from orchestrator.data.json_stream import iter_array, iter_members, iter_object, read_span
from orchestrator.data.loaders import LOADERS, DataFormatError, SkipReport, loader_class, open_loader
from orchestrator.data.loaders.comvg import ComVGLoader
from orchestrator.data.loaders.drawbench import DrawBenchLoader
from orchestrator.data.loaders.gqa import GQALoader, SceneGraphIndex, gqa_question_type, iter_scene_graphs
from orchestrator.data.loaders.images import BlobRoot, ImageRef
from orchestrator.data.loaders.refcocog import RefCOCOgLoader
from orchestrator.data.loaders.vl_checklist import VLCheckListLoader
from orchestrator.data.loaders.vqav2 import VQAExample, VQATextExample, VQAv2Loader
from orchestrator.data.loaders.winoground import WinogroundLoader
from orchestrator.manifest.schema import FILE_KINDS, DataSource
from orchestrator.storage import LocalBlobStore


def png(path: Path, colour=(255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path, format="PNG")


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 not decoded by loaders")


def write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = False) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(("\ufeff" if bom else "") + buf.getvalue(), encoding="utf-8")


# ================================================================ json_stream

@pytest.fixture(scope="module")
def sg_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("sg") / "train_sceneGraphs.json"
    write_gqa_scene_graphs(p, 600_000, seed=1, pool_size=16)
    return p


@pytest.mark.parametrize("chunk", [64, 333, 4096, 1 << 20])
def test_stream_equals_json_load(sg_file: Path, chunk: int) -> None:
    assert dict(iter_object(sg_file, chunk_bytes=chunk)) == json.loads(sg_file.read_bytes())


def test_stream_spans_lines_and_unicode(tmp_path: Path) -> None:
    doc = {"2354786": {"name": "café ✓", "n": [1, 2.5, -3e2, True, None]}, "日本": "語", "big": 12345678901234567890,
           "empty": {}, "list": []}
    p = tmp_path / "u.json"
    p.write_text("\ufeff" + json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    for chunk in (64, 70, 1 << 16):
        members = list(iter_members(p, chunk_bytes=chunk))
        assert {m.key: m.value for m in members} == doc
        for m in members:
            assert read_span(p, m.start, m.end) == m.value
        assert [m.line for m in members] == [2, 12, 13, 14, 15]


def test_stream_expands_nested_arrays_and_top_level_arrays(tmp_path: Path) -> None:
    p = tmp_path / "q.json"
    p.write_text(json.dumps({"info": {"v": 2}, "questions": [{"question_id": i} for i in range(50)],
                             "data_subtype": "val2014"}, indent=1))
    got = list(iter_members(p, expand=("questions",), chunk_bytes=64))
    assert [m.key for m in got] == ["info"] + ["questions"] * 50 + ["data_subtype"]
    assert [m.index for m in got if m.key == "questions"] == list(range(50))
    a = tmp_path / "a.json"
    a.write_text('[\n ["x.jpg", {"POS": ["a"], "NEG": ["b"]}],\n ["y.jpg", {"POS": [], "NEG": []}]\n]')
    assert [(m.value[0], m.line) for m in iter_array(a)] == [("x.jpg", 2), ("y.jpg", 3)]


@pytest.mark.parametrize("text,line,fragment", [
    ('{"a": 1 "b": 2}', 1, "expected ',' or '}'"),
    ('{\n "a": 1,\n "b": [1, 2,\n  x]}', 4, "invalid JSON: Expecting value, column 3"),
    ('{"a": [1, 2', 1, "Expecting ',' delimiter"),
    ('{"a": "never closed', 1, "Unterminated string"),
    ('{"a": 1,}', 1, "expected a member key"),
    ('{"a": 1} trailing', 1, "unexpected data after"),
    ('[1, 2]', 1, "expected a JSON object"),
])
def test_stream_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    p = tmp_path / "bad_sceneGraphs.json"
    p.write_text(text)
    for chunk in (64, 1 << 20):
        with pytest.raises(DataFormatError) as err:
            list(iter_object(p, chunk_bytes=chunk))
        assert err.value.file == str(p) and err.value.line == line
        assert str(err.value).startswith(f"{p}:{line}: ") and fragment in str(err.value)


def test_stream_rejects_bad_utf8(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataFormatError, match="not UTF-8 at byte 7"):
        list(iter_object(p))


def test_stream_memory_is_bounded(tmp_path: Path) -> None:
    """~50 MB of GQA scene graphs: peak traced memory stays a small fraction of the file."""
    p = tmp_path / "train_sceneGraphs.json"
    graphs = write_gqa_scene_graphs(p, 50 * 1024 * 1024, seed=2)
    size = p.stat().st_size
    gc.collect()
    tracemalloc.start()
    try:
        n = sum(1 for _ in iter_members(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == graphs
    assert peak < size / 20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"


# ================================================================ errors and registry

def test_error_and_skip_report_format() -> None:
    e = DataFormatError("data/x.csv", 12, "missing column 'Category'")
    assert str(e) == "data/x.csv:12: missing column 'Category'" and (e.file, e.line) == ("data/x.csv", 12)
    assert str(DataFormatError("refs.p", 3, "bad", unit="item")) == "refs.p, item 3: bad"
    r = SkipReport(keep=1)
    r.add("missing image", e)
    r.add("missing image", e)
    r.add("bad JSON line", "x")
    assert r.total == 3 and r.counts == {"missing image": 2, "bad JSON line": 1}
    assert r.examples["missing image"] == [str(e)]
    assert r.summary().startswith("skipped 3 record(s): 2 missing image, 1 bad JSON line")


def test_registry_covers_every_file_kind() -> None:
    assert set(LOADERS) == set(FILE_KINDS)
    for kind in FILE_KINDS:
        assert loader_class(kind).kind == kind
    with pytest.raises(ValueError, match="no loader for data kind 'shapes'"):
        loader_class("shapes")


# ================================================================ Winoground

def winoground_root(tmp: Path, extra_lines: list[str] = (), missing_image: bool = False) -> Path:
    root = tmp / "winoground"
    rows = [{"id": i, "caption_0": f"a {c} circle left of a square", "caption_1": f"a square left of a {c} circle",
             "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "tag": tag, "secondary_tag": "",
             "num_main_preds": 1, "collapsed_tag": coll}
            for i, (c, tag, coll) in enumerate([("red", "Relation", "Relation"), ("blue", "Noun", "Object"),
                                                ("green", "Adjective-Color", "Relation")])]
    root.mkdir(parents=True)
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    (root / "examples.jsonl").write_text("\n".join(lines) + "\n")
    for r in rows:
        for k in ("image_0", "image_1"):
            if not (missing_image and r["id"] == 1 and k == "image_1"):
                png(root / "images" / f"{r[k]}.png")
    return root


def test_winoground_jsonl(tmp_path: Path) -> None:
    root = winoground_root(tmp_path)
    examples = WinogroundLoader(root).load()
    assert [e.id for e in examples] == [0, 1, 2]
    e = examples[0]
    assert e.image_0.uri == str(root / "images" / "ex_0_img_0.png") and e.image_1.exists()
    assert e.image_0.open_image().size == (4, 4)
    assert e.source == f"{root / 'examples.jsonl'}:1"
    assert e.text_choices()[1].answer == 1
    assert [e.id for e in WinogroundLoader(root, categories=["Object"])] == [1]
    assert [e.id for e in WinogroundLoader(root, categories=["relation"], n=1)] == [0]


def test_winoground_bad_line_and_missing_image(tmp_path: Path, caplog) -> None:
    root = winoground_root(tmp_path, extra_lines=["{not json", json.dumps({"id": 9, "caption_0": "x"})],
                           missing_image=True)
    file = root / "examples.jsonl"
    with pytest.raises(DataFormatError) as err:
        WinogroundLoader(root).load()
    assert err.value.file == str(file) and err.value.line == 2 and "image not found" in str(err.value)
    loader = WinogroundLoader(root, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="orchestrator.data"):
        assert [e.id for e in loader] == [0, 2]
    assert loader.skips.counts == {"missing image": 1, "bad JSON line": 1, "missing field": 1}
    assert any(f"{file}:4" in x for x in loader.skips.examples["bad JSON line"])
    assert any(f"{file}:5" in x and "caption_1" in x for x in loader.skips.examples["missing field"])
    assert "skipped 3 record(s)" in caplog.text


def test_winoground_from_a_blob_prefix(tmp_path: Path) -> None:
    src = winoground_root(tmp_path)
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    for f in sorted(src.rglob("*")):
        if f.is_file():
            store.put_file(f"bench/winoground/{f.relative_to(src).as_posix()}", f)
    examples = WinogroundLoader(BlobRoot(store, "bench/winoground", uri="blob://bench/winoground")).load()
    assert len(examples) == 3
    assert examples[0].image_0.uri == "blob://bench/winoground/images/ex_0_img_0.png"
    assert examples[0].image_0.open_image().size == (4, 4)


def test_winoground_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    img = {"bytes": buf.getvalue(), "path": "ex_0_img_0.png"}
    table = pa.table({"id": [0, 1], "image_0": [img, img], "image_1": [img, {"bytes": None, "path": None}],
                      "caption_0": ["a", "b"], "caption_1": ["c", "d"], "tag": ["Noun", "Noun"],
                      "secondary_tag": ["", ""], "num_main_preds": [1, 1], "collapsed_tag": ["Object", "Object"]})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(DataFormatError, match=r"row 2: image column"):
        WinogroundLoader(tmp_path).load()
    loader = WinogroundLoader(tmp_path, on_error="skip")
    (ex,) = loader.load()
    assert ex.image_0.read_bytes() == buf.getvalue() and loader.skips.total == 1

    # A corrupt file is an error naming it, whether its footer or its data pages are damaged.
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"test-00000-of-00001.parquet: not a readable parquet file"):
        WinogroundLoader(tmp_path, on_error="skip").load()
    damaged = bytearray(good)
    damaged[4:200] = bytes(196)  # the first data pages zeroed, footer intact
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataFormatError, match=r"test-00000-of-00001.parquet: (corrupt parquet data|not a readable)"):
        WinogroundLoader(tmp_path, on_error="skip").load()


# ================================================================ DrawBench

DRAWBENCH_ROWS = [
    ["A red colored car.", "Colors"],
    ["Three cats and one dog sitting on the grass.", "Counting"],
    ['A small vessel propelled on water by oars, sails, or an engine. "Quoted", it says.\nSecond line.', "Counting "],
    ["A car on the left of a bus.", " Positional"],
    ["Un café près de la tour Eiffel — 東京.", "Gary Marcus et al. "],
    ["A horse riding an astronaut.", "Conflicting"],
]


def test_drawbench_csv(tmp_path: Path) -> None:
    p = tmp_path / "DrawBench Prompts - Sheet1.csv"
    write_csv(p, ["Prompts", "Category"], DRAWBENCH_ROWS, bom=True)
    prompts = DrawBenchLoader(tmp_path).load()
    assert [x.category for x in prompts] == ["Colors", "Counting", "Counting", "Positional", "Gary Marcus et al.",
                                             "Conflicting"]
    assert prompts[2].prompt.startswith("A small vessel") and prompts[2].prompt.endswith("Second line.")
    assert prompts[4].prompt == "Un café près de la tour Eiffel — 東京."
    # Record start lines: the quoted prompt spans lines 4-5, so the next record starts on line 6.
    assert [x.source.rsplit(":", 1)[1] for x in prompts] == ["2", "3", "4", "6", "7", "8"]
    seed = DrawBenchLoader(p, categories=["Counting", "positional"]).load()  # root may be the file itself
    assert [x.index for x in seed] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"no prompts in category \['Countng'\]"):
        DrawBenchLoader(tmp_path, categories=["Countng"]).load()


def test_drawbench_prompt_column_variant_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "drawbench.csv"
    write_csv(p, ["Prompt", "Category", "Note"], [["A cube.", "Colors", ""], ["", "Text", ""],
                                                  ["Short row"], ["Ok.", "Reddit", ""]])
    with pytest.raises(DataFormatError) as err:
        DrawBenchLoader(tmp_path).load()
    assert (err.value.file, err.value.line) == (str(p), 3)
    loader = DrawBenchLoader(tmp_path, on_error="skip")
    assert [x.prompt for x in loader] == ["A cube.", "Ok."]
    assert loader.skips.counts == {"empty prompt": 1, "short row": 1}
    write_csv(p, ["Text", "Category"], [["x", "y"]])
    with pytest.raises(DataFormatError, match=r"drawbench.csv:1: missing column 'Prompts' or 'Prompt'"):
        DrawBenchLoader(tmp_path).load()


# ================================================================ GQA

def gqa_root(tmp: Path) -> Path:
    root = tmp / "gqa"
    root.mkdir()
    graphs = {
        "2354786": {"width": 500, "height": 333, "objects": {
            "1": {"name": "man", "x": 10, "y": 10, "w": 100, "h": 300, "attributes": ["standing"],
                  "relations": [{"name": "to the left of", "object": "2"}]},
            "2": {"name": "table", "x": 300, "y": 200, "w": 150, "h": 100, "attributes": ["wooden"],
                  "relations": [{"name": "to the right of", "object": "1"}]}}},
        "2400001": {"width": 640, "height": 480, "objects": {
            "5": {"name": "dog", "x": 0, "y": 0, "w": 50, "h": 50, "attributes": [], "relations": []}}},
    }
    (root / "val_sceneGraphs.json").write_text(json.dumps(graphs, indent=1))

    def q(img, text, structural, semantic, detailed, ann=None):
        return {"imageId": img, "question": text, "answer": "yes", "fullAnswer": "Yes, it is.",
                "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
                "annotations": {"question": ann or {}, "answer": {}, "fullAnswer": {}}, "semantic": []}
    questions = {
        "q1": q("2354786", "Is the man to the left of the table?", "verify", "rel", "relVerify", {"2": "1", "6": "2"}),
        "q2": q("2354786", "What color is the table?", "query", "attr", "colorQuery"),
        "q3": q("2400001", "Is there a dog?", "verify", "obj", "exist", {"3": "5"}),
        "q4": q("2354786", "Is the table on the left or right?", "choose", "attr", "positionChoose", {"1": "2"}),
        "q5": q("9999999", "Is there a cat?", "verify", "obj", "exist"),
    }
    (root / "val_balanced_questions.json").write_text(json.dumps(questions, indent=1))
    for img in ("2354786", "2400001"):
        touch(root / "images" / f"{img}.jpg")
    return root


def test_gqa_question_types() -> None:
    def t(semantic, detailed):
        return gqa_question_type({"types": {"semantic": semantic, "detailed": detailed}})
    assert (t("rel", "relS"), t("attr", "positionQuery"), t("rel", "existRelS"), t("attr", "colorQuery")) == \
        ("relation", "position", "existence", None)


def test_gqa_loader_selects_seed_types_and_joins_graphs(tmp_path: Path) -> None:
    root = gqa_root(tmp_path)
    loader = GQALoader(root, with_scene_graphs=True, on_error="skip")
    got = loader.load()
    assert [(x.question_id, x.question_type) for x in got] == [("q1", "relation"), ("q3", "existence"),
                                                              ("q4", "position")]
    assert got[0].scene_graph.objects["2"].name == "table" and got[0].image.exists()
    assert got[0].focus().objects == ("1", "2")
    assert loader.skips.counts == {"missing scene graph": 1}
    # GQA's own type values are categories too; the colour question is not a seed type.
    assert [x.question_id for x in GQALoader(root, categories=["attr"], check_images=False)] == ["q2", "q4"]
    with pytest.raises(DataFormatError) as err:
        GQALoader(root).load()  # q5's image is missing
    assert err.value.file == str(root / "val_balanced_questions.json") and "image not found" in str(err.value)
    lines = (root / "val_balanced_questions.json").read_text().splitlines()
    assert lines[err.value.line - 1].strip().startswith('"q5"')


def test_gqa_scene_graph_stream_and_index(tmp_path: Path, sg_file: Path) -> None:
    root = gqa_root(tmp_path)
    graphs = list(iter_scene_graphs(root / "val_sceneGraphs.json"))
    assert [g.image_id for g in graphs] == ["2354786", "2400001"]
    with SceneGraphIndex.build(sg_file) as index:
        ref = json.loads(sg_file.read_bytes())
        assert len(index) == len(ref)
        key = list(ref)[7]
        assert index.get(key).to_gqa()["objects"].keys() == ref[key]["objects"].keys()
    bad = tmp_path / "bad_sceneGraphs.json"
    bad.write_text('{\n"1": {"width": 1, "height": 1, "objects": {"a": {"x": 1}}},\n"2": 5\n}')
    with pytest.raises(DataFormatError, match=r"bad_sceneGraphs.json:2 \(byte 7\): scene graph '1'"):
        list(iter_scene_graphs(bad))
    skips = SkipReport()
    assert list(iter_scene_graphs(bad, on_bad=skips.add)) == [] and skips.counts == {"bad scene graph": 2}


# ================================================================ ComVG

def test_comvg(tmp_path: Path) -> None:
    header = ["id", "sentence", "pos_triplet", "neg_triplet", "pos_image_id", "neg_image_id", "neg_value"]
    rows = [["0", "man riding horse", "man,ride,horse", "woman,ride,horse", "1", "2", "subject"],
            ["1", "dog on couch", "dog,on,couch", "dog,under,couch", "3", "4", "verb"],
            ["2", "cat near tree", "cat,near,tree", "cat,near,car", "5", "404", "object"],
            ["3", "bad", "a,b,c", "a,b,d", "x", "1", "object"]]
    write_csv(tmp_path / "compositional_visual_genome.csv", header, rows)
    for i in (1, 2, 5):
        touch(tmp_path / "VG_100K" / f"{i}.jpg")
    for i in (3, 4):
        touch(tmp_path / "images" / f"{i}.jpg")
    loader = ComVGLoader(tmp_path, on_error="skip")
    got = loader.load()
    assert [(e.id, e.neg_value) for e in got] == [(0, "subject"), (1, "verb")]
    assert got[0].pos_image.uri.endswith("VG_100K/1.jpg") and got[1].pos_image.uri.endswith("images/3.jpg")
    assert got[0].image_choice().images[0] == got[0].pos_image
    assert loader.skips.counts == {"missing image": 1, "bad row": 1}
    assert [e.id for e in ComVGLoader(tmp_path, categories=["verb"])] == [1]
    with pytest.raises(DataFormatError, match=r"compositional_visual_genome.csv:4: image not found"):
        ComVGLoader(tmp_path).load()


# ================================================================ RefCOCOg

def refcocog_root(tmp: Path) -> Path:
    root = tmp / "refcocog"
    root.mkdir()
    refs = []
    for k in range(12):
        image_id = 100 + k // 2  # two refs per image
        refs.append({"ref_id": k, "ann_id": 1000 + k, "image_id": image_id, "split": "val" if k < 4 else "train",
                     "category_id": 1 if k % 2 else 18, "file_name": f"COCO_train2014_{image_id:012d}_{k}.jpg",
                     "sentences": [{"sent": f"object {k} sentence {j}", "raw": f"Object {k}, sentence {j}.",
                                    "tokens": [], "sent_id": 10 * k + j} for j in range(2)]})
    with open(root / "refs(google).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    images = [{"id": 100 + i, "file_name": f"COCO_train2014_{100 + i:012d}.jpg", "width": 640, "height": 480}
              for i in range(6)]
    anns = [{"id": 1000 + k, "image_id": 100 + k // 2, "bbox": [k, k, 10, 10], "category_id": 1} for k in range(12)]
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    for im in images:
        touch(root / "images" / "train2014" / im["file_name"])
    return root


def test_refcocog_ten_way_text_choice(tmp_path: Path) -> None:
    root = refcocog_root(tmp_path)
    got = RefCOCOgLoader(root, seed=3).load()
    assert len(got) == 24
    e = got[0]
    assert len(e.texts) == 10 and e.texts[0] == "Object 0, sentence 0." and len(set(e.texts)) == 10
    own = {f"Object {k}, sentence {j}." for k in (0, 1) for j in range(2)}  # image 100's refs
    assert not own & set(e.texts[1:])
    assert e.category == "dog" and e.bbox == (0.0, 0.0, 10.0, 10.0)
    assert e.image.uri.endswith("images/train2014/COCO_train2014_000000000100.jpg")
    again = RefCOCOgLoader(root, seed=3, categories=["dog"]).load()
    assert again[0].texts == e.texts  # negatives do not depend on filters
    assert RefCOCOgLoader(root, seed=4).load()[0].texts != e.texts
    assert {x.split for x in RefCOCOgLoader(root, split="val")} == {"val"}


def test_refcocog_refuses_code_in_pickle_and_reports_bad_refs(tmp_path: Path) -> None:
    root = refcocog_root(tmp_path)
    refs = pickle.loads((root / "refs(google).p").read_bytes())
    del refs[3]["image_id"]
    (root / "refs(google).p").write_bytes(pickle.dumps(refs))
    with pytest.raises(DataFormatError, match=r"refs\(google\)\.p, item 4: ref lacks image_id"):
        RefCOCOgLoader(root).load()
    loader = RefCOCOgLoader(root, on_error="skip")
    assert len(loader.load()) == 22 and loader.skips.counts == {"bad ref": 1}

    class Evil:
        def __reduce__(self):
            return (eval, ("'owned'",))  # eval: print is swapped for Ray's once ray is imported
    (root / "refs(google).p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataFormatError, match="refuses to load builtins.eval"):
        RefCOCOgLoader(root).load()


# ================================================================ VQAv2

def vqa_root(tmp: Path) -> Path:
    root = tmp / "vqav2"
    root.mkdir()
    qs = [{"image_id": 42, "question": "What color is the bus?", "question_id": 420},
          {"image_id": 42, "question": "Is it raining?", "question_id": 421},
          {"image_id": 7, "question": "How many dogs?", "question_id": 70},
          {"image_id": 8, "question": "Unanswered?", "question_id": 80}]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(
        {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": "val2014",
         "questions": qs}))

    def ann(qid, img, answer, atype):
        return {"question_id": qid, "image_id": img, "question_type": "what", "answer_type": atype,
                "multiple_choice_answer": answer,
                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]}
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(
        {"info": {}, "data_subtype": "val2014",
         "annotations": [ann(420, 42, "red", "other"), ann(421, 42, "no", "yes/no"), ann(70, 7, "2", "number")]},
        indent=1))
    for img in (42, 7, 8):
        touch(root / "val2014" / f"COCO_val2014_{img:012d}.jpg")
    return root


def test_vqav2_raw_json(tmp_path: Path) -> None:
    root = vqa_root(tmp_path)
    loader = VQAv2Loader(root, on_error="skip")
    got = loader.load()
    assert all(isinstance(e, VQAExample) for e in got)
    assert [(e.question_id, e.multiple_choice_answer) for e in got] == [(420, "red"), (421, "no"), (70, "2")]
    assert len(got[0].answers) == 10 and got[0].image.uri.endswith("val2014/COCO_val2014_000000000042.jpg")
    assert loader.skips.counts == {"question without annotation": 1}
    assert [e.question_id for e in VQAv2Loader(root, categories=["yes/no"], on_error="skip")] == [421]
    with pytest.raises(DataFormatError, match="question 80 has no annotation"):
        VQAv2Loader(root).load()


def test_vqav2_text_csv(tmp_path: Path) -> None:
    header = ["sentence", "pos_image_id"] + [f"neg_sentence_{i}" for i in range(1, 10)]
    rows = [["What color is the hat? blue", "108327"] + [f"What color is the hat? x{i}" for i in range(9)],
            ["Is this broccoli? no", "8844"] + ["Is this broccoli? bus"] * 8 + ["Is this broccoli? "],
            ["Missing image? yes", "1"] + ["n"] * 9]
    write_csv(tmp_path / "vqa_text_test.csv", header, rows)
    for img in (108327, 8844):
        touch(tmp_path / "val2014" / f"COCO_val2014_{img:012d}.jpg")
    loader = VQAv2Loader(tmp_path, on_error="skip")
    got = loader.load()
    assert all(isinstance(e, VQATextExample) for e in got) and [e.image_id for e in got] == [108327, 8844]
    assert got[0].text_choice().texts[0] == "What color is the hat? blue" and len(got[0].texts) == 10
    assert loader.skips.counts == {"missing image": 1}
    write_csv(tmp_path / "vqa_text_test.csv", header[:5], [r[:5] for r in rows])
    with pytest.raises(DataFormatError, match=r"vqa_text_test.csv:1: missing column 'neg_sentence_4'"):
        VQAv2Loader(tmp_path).load()


# ================================================================ VL-CheckList

def test_vl_checklist(tmp_path: Path) -> None:
    (tmp_path / "corpus" / "v1" / "Attribute" / "color").mkdir(parents=True)
    (tmp_path / "corpus" / "v1" / "Relation" / "spatial").mkdir(parents=True)
    (tmp_path / "corpus/v1/Attribute/color/vg.yaml").write_text(yaml.safe_dump(
        {"ANNO_PATH": "data/Attribute/vg/color.json", "IMG_ROOT": "vg", "TYPE": "TUPLE_JSON"}))
    (tmp_path / "corpus/v1/Relation/spatial/vg.yaml").write_text(yaml.safe_dump(
        {"ANNO_PATH": "data/Relation/vg/spatial.json", "IMG_ROOT": "vg/", "TYPE": "TUPLE_JSON"}))
    (tmp_path / "data/Attribute/vg").mkdir(parents=True)
    (tmp_path / "data/Relation/vg").mkdir(parents=True)
    (tmp_path / "data/Attribute/vg/color.json").write_text(json.dumps([
        ["VG_100K/1.jpg", {"POS": ["a red car"], "NEG": ["a blue car"]}],
        ["VG_100K_2/2.jpg", {"POS": ["a green tree"], "NEG": ["a pink tree"]}],
        ["VG_100K/404.jpg", {"POS": ["x"], "NEG": ["y"]}],
    ], indent=1))
    (tmp_path / "data/Relation/vg/spatial.json").write_text(json.dumps([
        ["VG_100K/1.jpg", {"POS": ["car left of tree"], "NEG": ["car right of tree"]}],
        ["VG_100K/1.jpg", {"POS": "not a list"}],
    ], indent=1))
    touch(tmp_path / "vg/VG_100K/1.jpg")
    touch(tmp_path / "vg/VG_100K_2/2.jpg")
    loader = VLCheckListLoader(tmp_path, on_error="skip")
    got = loader.load()
    assert [(e.category, e.pos[0]) for e in got] == [("v1/Attribute/color/vg", "a red car"),
                                                     ("v1/Attribute/color/vg", "a green tree"),
                                                     ("v1/Relation/spatial/vg", "car left of tree")]
    assert got[0].text_choices()[0].texts == ("a red car", "a blue car")
    assert loader.skips.counts == {"missing image": 1, "bad entry": 1}
    assert [e.pos[0] for e in VLCheckListLoader(tmp_path, categories=["Relation"], on_error="skip")] == \
        ["car left of tree"]
    with pytest.raises(ValueError, match=r"\['Attributes'\] match nothing.*Attribute"):  # a plural typo
        VLCheckListLoader(tmp_path, categories=["Attributes"], on_error="skip").load()
    with pytest.raises(DataFormatError) as err:
        VLCheckListLoader(tmp_path, categories=["Attribute/color"]).load()
    lines = (tmp_path / "data/Attribute/vg/color.json").read_text().splitlines()
    item_line = lines.index('  "VG_100K/404.jpg",')  # 0-based: the item's '[' is the line before
    assert err.value.file == str(tmp_path / "data/Attribute/vg/color.json") and err.value.line == item_line
    color = (tmp_path / "data/Attribute/vg/color.json").read_text()
    assert err.value.entry == f"entry 2, byte {color.rindex('[', 0, color.index('VG_100K/404.jpg'))}"

    # A root that is one corpus YAML reads just that corpus, paths still from the repository root.
    one = VLCheckListLoader(tmp_path / "corpus/v1/Relation/spatial/vg.yaml", on_error="skip")
    assert [(e.category, e.pos[0]) for e in one] == [("v1/Relation/spatial/vg", "car left of tree")]
    assert one.skips.counts == {"bad entry": 1}


def test_entry_errors_in_one_line_json_name_the_entry(tmp_path: Path) -> None:
    """VL-CheckList, VQAv2 and COCO ship one-line JSON: `file:1` alone would not say which entry."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/c.yaml").write_text(yaml.safe_dump({"ANNO_PATH": "a.json", "IMG_ROOT": "img"}))
    text = json.dumps([["1.jpg", {"POS": ["p"], "NEG": ["n"]}], ["2.jpg", {"POS": "x"}]])
    (tmp_path / "a.json").write_text(text)
    touch(tmp_path / "img/1.jpg")
    touch(tmp_path / "img/2.jpg")
    with pytest.raises(DataFormatError,
                       match=rf"a.json:1 \(entry 1, byte {text.rindex('[', 0, text.index('2.jpg'))}\): "
                             r"entry's POS is not a list"):
        VLCheckListLoader(tmp_path / "corpus/c.yaml").load()


# ================================================================ manifest data block

def test_open_loader_from_a_manifest_data_source(tmp_path: Path) -> None:
    winoground_root(tmp_path)
    src = DataSource.model_validate({"kind": "winoground", "root": "winoground", "n": 2,
                                     "categories": ["Relation"], "on_error": "skip"},
                                    context={"base_dir": tmp_path})
    loader = open_loader(src, base_dir=tmp_path)
    assert isinstance(loader, WinogroundLoader) and [e.id for e in loader] == [0, 2]
    img = ImageRef("images/ex_0_img_0.png", loader.root)
    assert img == loader.load()[0].image_0 and img.exists()


def test_manifest_options_choose_among_several_question_files(tmp_path: Path) -> None:
    from orchestrator.data.loaders import open_loader
    from orchestrator.manifest import load_manifest

    root = gqa_root(tmp_path)
    (root / "train_balanced_questions.json").write_text("{}")  # a second file: ambiguous without options
    manifest = tmp_path / "m.yaml"
    body = ("name: gqa\nmodel: {variant: sd}\ndata:\n  eval: {kind: gqa, root: %s, on_error: skip%s}\n")
    manifest.write_text(body % (root.name, ""))
    with pytest.raises(FileNotFoundError) as ambiguous:
        open_loader(load_manifest(manifest).manifest.data.eval, tmp_path).load()
    assert "train_balanced_questions.json" in str(ambiguous.value)
    manifest.write_text(body % (root.name, ", options: {questions: val_balanced_questions.json}"))
    got = open_loader(load_manifest(manifest).manifest.data.eval, tmp_path).load()
    assert [x.question_id for x in got] == ["q1", "q3", "q4"]
    manifest.write_text(body % (root.name, ", options: {no_such_option: 1}"))
    with pytest.raises(ValueError, match="unsupported option"):
        open_loader(load_manifest(manifest).manifest.data.eval, tmp_path)


def test_filters_naming_values_the_data_lacks_are_errors(tmp_path: Path) -> None:
    """A typo'd or foreign category (or split) lists what the data has, instead of evaluating on
    fewer examples or none; a category that is there still filters as before."""
    gqa = gqa_root(tmp_path)
    with pytest.raises(ValueError, match=r"\['positon'\] match nothing \(no examples selected\); "
                                         r"the data has: .*position"):
        GQALoader(gqa, categories=["positon"], on_error="skip").load()
    with pytest.raises(ValueError, match=r"\['positon'\] match nothing; the data has"):  # one right, one typo
        GQALoader(gqa, categories=["position", "positon"], on_error="skip").load()
    wino = winoground_root(tmp_path)
    with pytest.raises(ValueError, match=r"\['Relations'\] match nothing.*Relation"):
        WinogroundLoader(wino, categories=["Relations"]).load()
    vqa = vqa_root(tmp_path)
    with pytest.raises(ValueError, match=r"\['yes-no'\] match nothing.*yes/no"):
        VQAv2Loader(vqa, categories=["yes-no"], on_error="skip").load()
    assert [e.question_id for e in VQAv2Loader(vqa, categories=["yes/no"], on_error="skip")] == [421]
    with pytest.raises(ValueError, match=r"no refs in split 'validation'; the splits there are: .*val"):
        RefCOCOgLoader(refcocog_root(tmp_path), split="validation").load()
    header = ["id", "sentence", "pos_triplet", "neg_triplet", "pos_image_id", "neg_image_id", "neg_value"]
    (tmp_path / "comvg").mkdir()
    write_csv(tmp_path / "comvg" / "compositional_visual_genome.csv", header,
              [["0", "man riding horse", "man,ride,horse", "woman,ride,horse", "1", "2", "subject"]])
    for i in (1, 2):
        touch(tmp_path / "comvg" / "VG_100K" / f"{i}.jpg")
    with pytest.raises(ValueError, match=r"\['subjects'\] match nothing.*the data has: subject"):
        ComVGLoader(tmp_path / "comvg", categories=["subjects"]).load()


# ================================================================ default filters vs the user's

def test_a_default_filter_may_partly_match_but_a_named_category_may_not(tmp_path: Path) -> None:
    """GQA's default question types (relation, position, existence) on a file without existence
    questions select the others; naming existence is still an error, and a default of which
    nothing matches is one too, naming what it looked for."""
    root = gqa_root(tmp_path)
    qfile = root / "val_balanced_questions.json"
    questions = json.loads(qfile.read_text())
    for qid in ("q3", "q5"):  # the existence questions
        del questions[qid]
    qfile.write_text(json.dumps(questions, indent=1))
    assert [(x.question_id, x.question_type) for x in GQALoader(root)] == [("q1", "relation"), ("q4", "position")]
    # Through the manifest path too: data.eval without categories takes the default.
    src = DataSource.model_validate({"kind": "gqa", "root": "gqa"}, context={"base_dir": tmp_path})
    assert [x.question_id for x in open_loader(src, tmp_path)] == ["q1", "q4"]
    named = DataSource.model_validate({"kind": "gqa", "root": "gqa", "categories": ["relation", "existence"]},
                                      context={"base_dir": tmp_path})
    with pytest.raises(ValueError, match=r"categories \['existence'\] match nothing; the data has: .*relation"):
        open_loader(named, tmp_path).load()
    # Only a colour question left: none of the default matches.
    qfile.write_text(json.dumps({"q2": questions["q2"]}))
    with pytest.raises(ValueError, match=r"the default categories \['relation', 'position', 'existence'\] match "
                                         r"nothing \(no examples selected\); the data has: .*attr.*name the ones"):
        GQALoader(root).load()
    assert [x.question_id for x in GQALoader(root, categories=["attr"])] == ["q2"]


def test_a_callers_default_categories_follow_the_same_rule(tmp_path: Path) -> None:
    """DrawBench's seed-paper categories as a caller's default: a sheet with Counting prompts but
    no Positional ones is fine; a user's Positional is not; a default wholly absent is an error."""
    p = tmp_path / "drawbench.csv"
    write_csv(p, ["Prompts", "Category"], [["Two cats.", "Counting"], ["A red cube.", "Colors"]])
    seed = ("Counting", "Positional")
    assert [x.prompt for x in DrawBenchLoader(p, default_categories=seed)] == ["Two cats."]
    with pytest.raises(ValueError, match=r"no prompts in category \['Positional'\]; the file has"):
        DrawBenchLoader(p, categories=list(seed), default_categories=seed).load()
    write_csv(p, ["Prompts", "Category"], [["A red cube.", "Colors"]])
    with pytest.raises(ValueError, match=r"no prompts in the default categories \['Counting', 'Positional'\]"):
        DrawBenchLoader(p, default_categories=seed).load()


def test_caller_settings_are_not_manifest_options(tmp_path: Path) -> None:
    root = gqa_root(tmp_path)
    for key, value in (("role", "eval"), ("default_categories", "attr")):
        src = DataSource.model_validate({"kind": "gqa", "root": root.name, "options": {key: value}},
                                        context={"base_dir": tmp_path})
        with pytest.raises(ValueError, match=rf"data.options.{key} is not a manifest setting"):
            open_loader(src, tmp_path)
    with pytest.raises(ValueError, match="role must be one of train, eval"):
        GQALoader(root, role="test")
