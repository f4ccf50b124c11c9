"""GenEval's prompt metadata loader: records of every tag, blank lines, per-folder metadata.jsonl, and a
file/line/field error for each kind of bad record."""
from __future__ import annotations

import json

import pytest

from orchestrator.data.loaders.errors import DataFormatError, SkipReport
from orchestrator.data.loaders.geneval import (
    COLORS,
    ExcludeClause,
    IncludeClause,
    load_geneval_metadata,
    load_geneval_prompt,
)

# One record per tag, shaped as GenEval's create_prompts.py writes them (json.dumps, key order kept).
RECORDS = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "toilet", "count": 1}, {"class": "bicycle", "count": 1}],
     "prompt": "a photo of a toilet and a bicycle"},
    {"tag": "counting", "include": [{"class": "clock", "count": 3}], "exclude": [{"class": "clock", "count": 4}],
     "prompt": "a photo of three clocks"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "orange"}],
     "prompt": "a photo of an orange car"},
    {"tag": "position", "include": [{"class": "bench", "count": 1},
                                    {"class": "cup", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a cup left of a bench"},
    {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "red"},
                                      {"class": "vase", "count": 1, "color": "white"}],
     "prompt": "a photo of a red bus and a white vase"},
]


def _write(tmp_path, lines, name="evaluation_metadata.jsonl"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_loads_one_record_per_tag_with_clauses_and_metadata_string(tmp_path):
    path = _write(tmp_path, [json.dumps(r) for r in RECORDS])
    prompts = load_geneval_metadata(path)
    assert [p.tag for p in prompts] == ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    assert [p.index for p in prompts] == list(range(6))
    counting, colors, position, attr = prompts[2], prompts[3], prompts[4], prompts[5]
    assert counting.include == (IncludeClause("clock", 3),)
    assert counting.exclude == (ExcludeClause("clock", 4),)
    assert colors.include[0].color == "orange" and colors.prompt == "a photo of an orange car"
    assert position.include[1] == IncludeClause("cup", 1, None, ("left of", 0))
    assert [c.color for c in attr.include] == ["red", "white"]
    assert prompts[0].exclude == ()
    # GenEval's results.jsonl `metadata` column is json.dumps of the record as read: same text, same key order.
    assert [p.metadata for p in prompts] == [json.dumps(r) for r in RECORDS]
    assert position.to_record() == RECORDS[4]
    assert prompts[1].source == f"{path}:2"


def test_blank_lines_are_skipped_and_do_not_take_an_index(tmp_path):
    path = _write(tmp_path, ["", json.dumps(RECORDS[0]), "   ", "", json.dumps(RECORDS[1])])
    prompts = load_geneval_metadata(path)
    assert [p.index for p in prompts] == [0, 1]
    assert [p.source.rsplit(":", 1)[1] for p in prompts] == ["2", "5"]


def test_per_folder_metadata_file_takes_the_folder_number(tmp_path):
    folder = tmp_path / "00012"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text(json.dumps(RECORDS[4]))  # as GenEval's json.dump: no newline
    p = load_geneval_prompt(folder / "metadata.jsonl")
    assert p.index == 12 and p.tag == "position" and p.include[1].position == ("left of", 0)
    assert p.metadata == json.dumps(RECORDS[4])
    # json.load accepts an object over several lines; the record still parses, index given explicitly.
    other = tmp_path / "metadata.jsonl"
    other.write_text("\n" + json.dumps(RECORDS[2], indent=2))
    q = load_geneval_prompt(other, index=3)
    assert q.index == 3 and q.include == (IncludeClause("clock", 3),)


def _bad(tmp_path, record, *, before=1):
    """Write `before` good lines and then `record` (a dict, or raw text); return the error."""
    good = [json.dumps(RECORDS[0])] * before
    bad = record if isinstance(record, str) else json.dumps(record)
    path = _write(tmp_path, good + [bad])
    with pytest.raises(DataFormatError) as info:
        load_geneval_metadata(path)
    err = info.value
    assert err.file == str(path) and err.line == before + 1
    assert str(err).startswith(f"{path}:{before + 1}: field ")
    return err


def _with(**changes):
    rec = json.loads(json.dumps(RECORDS[4]))
    rec.update(changes)
    return rec


def _clause(i, **changes):
    rec = json.loads(json.dumps(RECORDS[4]))
    rec["include"][i].update(changes)
    return rec


@pytest.mark.parametrize("record, field, words", [
    ('{"tag": "single_object", "prompt": "a", ', "(record)", "not valid JSON"),
    ("[1, 2]", "(record)", "expected a JSON object"),
    (_with(tag="spatial"), "tag", "unknown tag"),
    ({"prompt": "a photo", "include": [{"class": "cup", "count": 1}]}, "tag", "missing"),
    ({"tag": "single_object", "include": [{"class": "cup", "count": 1}]}, "prompt", "missing"),
    (_with(prompt="  "), "prompt", "non-empty"),
    (_with(prompt=3), "prompt", "non-empty"),
    (_with(include=[]), "include", "at least one"),
    (_with(include={"class": "cup"}), "include", "list"),
    (_clause(1, count=0), "include[1].count", ">= 1"),
    (_clause(0, count="2"), "include[0].count", "integer"),
    (_clause(0, count=True), "include[0].count", "integer"),
    (_clause(0, count=1.5), "include[0].count", "integer"),
    (_clause(0, color="teal"), "include[0].color", "unknown colour"),
    (_clause(1, position=["left of", 1]), "include[1].position", "earlier"),
    (_clause(1, position=["left of", 2]), "include[1].position", "earlier"),
    (_clause(1, position=["left of", -1]), "include[1].position", "earlier"),
    (_clause(0, position=["left of", 0]), "include[0].position", "none"),
    (_clause(1, position=["behind", 0]), "include[1].position", "unknown relation"),
    (_clause(1, position="left of"), "include[1].position", "[relation, clause index]"),
    (_with(seed=4), "seed", "unknown key"),
    (_clause(0, size="big"), "include[0].size", "unknown key"),
    (_with(exclude=[{"class": "cup", "count": 2, "color": "red"}]), "exclude[0].color", "unknown key"),
    (_with(exclude=[{"class": "cup", "count": 0}]), "exclude[0].count", ">= 1"),
    (_with(exclude=[{"count": 2}]), "exclude[0].class", "missing"),
    (_clause(0, **{"class": ""}), "include[0].class", "non-empty"),
])
def test_each_bad_record_names_file_line_and_field(tmp_path, record, field, words):
    err = _bad(tmp_path, record, before=2)
    assert f"field {field}: " in str(err)
    assert words in err.message


def test_missing_count_and_class_are_named(tmp_path):
    rec = _with(include=[{"class": "cup"}])
    assert "field include[0].count: missing" in str(_bad(tmp_path, rec))
    rec = _with(include=[{"count": 1}])
    assert "field include[0].class: missing" in str(_bad(tmp_path, rec))


def test_skip_mode_counts_bad_records_and_keeps_folder_numbers(tmp_path):
    path = _write(tmp_path, [json.dumps(RECORDS[0]), json.dumps(_clause(0, color="teal")), "{oops",
                             json.dumps(RECORDS[1])])
    report = SkipReport()
    prompts = load_geneval_metadata(path, on_error="skip", report=report)
    assert [p.index for p in prompts] == [0, 3]  # the prompt after two bad lines is still image folder 00003
    assert report.counts == {"bad record": 1, "bad JSON line": 1}


def test_per_folder_metadata_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "metadata.jsonl"
    path.write_text("\n\n" + json.dumps(_clause(0, color="violet")))
    with pytest.raises(DataFormatError) as info:
        load_geneval_prompt(path)
    assert info.value.line == 3 and "field include[0].color" in str(info.value)
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1]))  # two objects: not GenEval's file
    with pytest.raises(DataFormatError) as info:
        load_geneval_prompt(path)
    assert info.value.line == 2 and "not one JSON object" in str(info.value)


def test_colours_are_genevals_ten_in_order():
    assert COLORS == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
