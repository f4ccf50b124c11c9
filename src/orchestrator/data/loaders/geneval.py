"""GenEval's prompt metadata (Ghosh et al. 2023, github.com/djghosh13/geneval): `prompts/evaluation_metadata.jsonl`.

Each line of the official file is one JSON object naming what an image for the prompt must show::

    {"tag": "position", "include": [{"class": "bench", "count": 1},
                                    {"class": "cup", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a cup left of a bench"}

- ``tag``: the task, one of `TAGS` (``single_object``, ``two_object``, ``counting``, ``colors``,
  ``position``, ``color_attr``);
- ``prompt``: the text the model is prompted with;
- ``include``: the clauses that must all hold: ``class`` (a COCO name as in GenEval's object_names.txt),
  ``count`` (at least that many detections), optionally ``color`` (one of `COLORS`) and ``position``
  (``[relation, i]``: each of these objects stands in ``relation`` to the objects of include clause ``i``,
  which must come earlier);
- ``exclude`` (optional): clauses with ``class`` and ``count``; one fails the image when the class has
  ``count`` or more detections (counting prompts exclude count + 1).

GenEval's generation script copies the N-th line into ``<images>/<NNNNN>/metadata.jsonl`` beside the
samples (one object, written without a newline); `load_geneval_prompt` reads such a file through the same
record parser and takes its index from the folder name.

Nothing is guessed: every malformed record is a `DataFormatError` naming the file, the line and the field
(``include[1].position``), or with ``on_error="skip"`` is counted in the `SkipReport` and left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from orchestrator.data.spatial_rule import GENEVAL_RELATIONS
from orchestrator.manifest.schema import GENEVAL_TAGS

from .errors import DataFormatError, ErrorPolicy, OnError, SkipReport, quote

__all__ = ["COLORS", "OBJECT_NAMES", "RELATIONS", "TAGS", "ExcludeClause", "GenEvalPrompt", "IncludeClause",
           "load_geneval_metadata", "load_geneval_prompt", "parse_record"]

TAGS = GENEVAL_TAGS  # the manifest's eval.geneval.tags choices: one definition
# GenEval's colours, in its order (the CLIP colour classifier's class order, too).
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = GENEVAL_RELATIONS  # "left of", "right of", "above", "below"
# GenEval's object_names.txt: the 80 COCO instance classes in COCO's (and mmdet's) order, as its prompts name
# them: mmdet's "mouse", "remote", "keyboard" read "computer mouse", "tv remote", "computer keyboard".
OBJECT_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

_RECORD_KEYS = ("tag", "prompt", "include", "exclude")
_INCLUDE_KEYS = ("class", "count", "color", "position")
_EXCLUDE_KEYS = ("class", "count")


@dataclass(frozen=True)
class IncludeClause:
    classname: str
    count: int
    color: str | None = None
    position: tuple[str, int] | None = None  # (relation, index of an earlier include clause)


@dataclass(frozen=True)
class ExcludeClause:
    classname: str
    count: int


@dataclass(frozen=True)
class GenEvalPrompt:
    index: int | None  # the record's position in the file (0-based), i.e. GenEval's image folder number
    tag: str
    prompt: str
    include: tuple[IncludeClause, ...]
    exclude: tuple[ExcludeClause, ...]
    # json.dumps of the record as read (key order kept): GenEval's `metadata` column in results.jsonl,
    # which summary_scores.py groups by to count prompts.
    metadata: str
    source: str  # file:line

    def to_record(self) -> dict[str, Any]:
        """The record as it was in the file."""
        return json.loads(self.metadata)


class _Bad(Exception):
    """A field of one record is wrong: (field, message); the caller adds file and line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(field, f"must be an integer >= 1, not {quote(value)}")
    if value < 1:
        raise _Bad(field, f"must be >= 1, not {value}")
    return value


def _classname(clause: dict[str, Any], field: str) -> str:
    if "class" not in clause:
        raise _Bad(f"{field}.class", "missing")
    name = clause["class"]
    if not isinstance(name, str) or not name.strip():
        raise _Bad(f"{field}.class", f"must be a non-empty string, not {quote(name)}")
    return name


def _unknown_keys(record: dict[str, Any], allowed: tuple[str, ...], field: str | None) -> None:
    extra = [k for k in record if k not in allowed]
    if extra:
        where = f"{field}.{extra[0]}" if field else str(extra[0])
        raise _Bad(where, f"unknown key (expected only {', '.join(allowed)})")


def _clause_list(record: dict[str, Any], key: str, required: bool) -> list[Any]:
    if key not in record:
        if required:
            raise _Bad(key, "missing")
        return []
    value = record[key]
    if not isinstance(value, list):
        raise _Bad(key, f"must be a list of clauses, not {quote(value)}")
    if required and not value:
        raise _Bad(key, "must name at least one clause")
    return value


def _include(clause: Any, i: int) -> IncludeClause:
    field = f"include[{i}]"
    if not isinstance(clause, dict):
        raise _Bad(field, f"must be a JSON object, not {quote(clause)}")
    _unknown_keys(clause, _INCLUDE_KEYS, field)
    name = _classname(clause, field)
    if "count" not in clause:
        raise _Bad(f"{field}.count", "missing")
    count = _count(clause["count"], f"{field}.count")
    color = clause.get("color")
    if "color" in clause and color not in COLORS:
        raise _Bad(f"{field}.color", f"unknown colour {quote(color)} (GenEval's are {', '.join(COLORS)})")
    position = None
    if "position" in clause:
        pos = clause["position"]
        if not isinstance(pos, list) or len(pos) != 2:
            raise _Bad(f"{field}.position", f"must be [relation, clause index], not {quote(pos)}")
        relation, target = pos
        if relation not in RELATIONS:
            raise _Bad(f"{field}.position", f"unknown relation {quote(relation)} (expected one of "
                                            f"{', '.join(RELATIONS)})")
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < i:
            earlier = f"an earlier include clause (0 to {i - 1})" if i else "an earlier include clause (there is none)"
            raise _Bad(f"{field}.position", f"must point at {earlier}, not {quote(target)}")
        position = (relation, target)
    return IncludeClause(name, count, color, position)


def _exclude(clause: Any, i: int) -> ExcludeClause:
    field = f"exclude[{i}]"
    if not isinstance(clause, dict):
        raise _Bad(field, f"must be a JSON object, not {quote(clause)}")
    _unknown_keys(clause, _EXCLUDE_KEYS, field)
    name = _classname(clause, field)
    if "count" not in clause:
        raise _Bad(f"{field}.count", "missing")
    return ExcludeClause(name, _count(clause["count"], f"{field}.count"))


def parse_record(record: Any, file: str | os.PathLike[str], line: int, index: int | None) -> GenEvalPrompt:
    """One GenEval metadata record (a parsed JSON value) as a `GenEvalPrompt`; `DataFormatError` if malformed."""
    file = str(file)
    try:
        if not isinstance(record, dict):
            raise _Bad("(record)", f"expected a JSON object, got {type(record).__name__}")
        _unknown_keys(record, _RECORD_KEYS, None)
        if "tag" not in record:
            raise _Bad("tag", "missing")
        tag = record["tag"]
        if tag not in TAGS:
            raise _Bad("tag", f"unknown tag {quote(tag)} (GenEval's are {', '.join(TAGS)})")
        if "prompt" not in record:
            raise _Bad("prompt", "missing")
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise _Bad("prompt", f"must be a non-empty string, not {quote(prompt)}")
        include = tuple(_include(c, i) for i, c in enumerate(_clause_list(record, "include", True)))
        exclude = tuple(_exclude(c, i) for i, c in enumerate(_clause_list(record, "exclude", False)))
    except _Bad as bad:
        raise DataFormatError(file, line, f"field {bad.field}: {bad.message}") from None
    return GenEvalPrompt(index, tag, prompt, include, exclude, json.dumps(record), f"{file}:{line}")


def _lines(path: Path, file: str, policy: ErrorPolicy) -> Iterator[tuple[int, int, Any]]:
    """(line number, record index, parsed JSON) per non-blank line; a bad line still takes its index,
    so the prompts after it keep their GenEval folder numbers."""
    index = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            index += 1
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                policy("not UTF-8", DataFormatError(file, lineno, f"field (record): not UTF-8: {exc}"))
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                policy("bad JSON line", DataFormatError(file, lineno, f"field (record): not valid JSON: {exc}"))
                continue
            yield lineno, index - 1, value


def load_geneval_metadata(path: str | os.PathLike[str], *, on_error: OnError = "raise",
                          report: SkipReport | None = None) -> list[GenEvalPrompt]:
    """Every prompt of a GenEval metadata file (``evaluation_metadata.jsonl``), in file order.

    Blank lines are skipped. A bad record raises `DataFormatError` (file, line, field); with
    ``on_error="skip"`` it is counted in `report` (logged when done) and the rest are read.
    """
    policy = ErrorPolicy(on_error, report)
    file = str(path)
    prompts: list[GenEvalPrompt] = []
    for lineno, index, value in _lines(Path(path), file, policy):
        try:
            prompts.append(parse_record(value, file, lineno, index))
        except DataFormatError as exc:
            policy("bad record", exc)
    policy.finish(file)
    return prompts


def load_geneval_prompt(path: str | os.PathLike[str], index: int | None = None) -> GenEvalPrompt:
    """The one prompt of a per-image-folder ``metadata.jsonl`` (``<images>/00012/metadata.jsonl``).

    GenEval reads it with ``json.load``, so the object may span lines; errors name the line where the
    object starts (or, for invalid JSON, where the parser stopped). `index` defaults to the folder's
    number when the folder is named by digits, as GenEval's are.
    """
    path = Path(path)
    file = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataFormatError(file, line, f"field (record): not UTF-8: {exc}") from None
    if not text.strip():
        raise DataFormatError(file, 1, "field (record): empty file, expected one JSON object")
    start = len(text) - len(text.lstrip())
    line = text.count("\n", 0, start) + 1
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(file, exc.lineno, f"field (record): not one JSON object: {exc.msg}") from None
    if index is None and path.parent.name.isdigit():
        index = int(path.parent.name)
    return parse_record(value, file, line, index)
