"""GQA: ``*_sceneGraphs.json`` and ``*_questions.json``, streamed.

The real train scene-graph file is over a gigabyte, one JSON object on one line; both files are
read with `json_stream`, so memory stays bounded by one member, not the file. Questions are
joined to their scene graph through a `SceneGraphIndex`: one streaming pass records each graph's
byte span, and a graph is parsed only when a question asks for it (a seek and a small
``json.loads``), which keeps the join bounded too: the index costs about 100 bytes per image.

Question types (Lin & Srikanth used relation, position and existence questions):
``position`` = GQA detailed type ``position*``; ``existence`` = detailed ``exist*``;
``relation`` = semantic ``rel`` (the rest of them). Other questions have no type here and are
left out unless a category names one of GQA's own type values (structural, semantic or
detailed, e.g. "verify", "attr", "existRelS").
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping

from ..captions import Focus
from ..json_stream import iter_members
from ..scene_graph import SceneGraph
from .base import Loader
from .errors import DataFormatError, quote
from .images import DataRoot, ImageRef

SEED_QUESTION_TYPES = ("relation", "position", "existence")
QUESTION_TYPES = SEED_QUESTION_TYPES


def gqa_question_type(q: Mapping[str, Any]) -> str | None:
    """relation / position / existence from a questions-JSON entry's types, or None."""
    types = q.get("types") or {}
    if not isinstance(types, Mapping):
        return None
    detailed, semantic = str(types.get("detailed") or ""), str(types.get("semantic") or "")
    if detailed.startswith("position"):
        return "position"
    if detailed.startswith("exist"):
        return "existence"
    if semantic == "rel":
        return "relation"
    return None


def focus_for(q: Mapping[str, Any], question_type: str | None = None) -> Focus:
    """The caption focus for a question: its type (ours where known) and the objects it names."""
    base = Focus.from_gqa_question(q)
    return Focus(question_type, base.objects) if question_type in QUESTION_TYPES else base


@dataclass(frozen=True)
class GQAQuestion:
    question_id: str
    image_id: str
    question: str
    answer: str | None
    full_answer: str | None
    question_type: str | None  # relation / position / existence, or None
    types: dict[str, str]
    raw: dict[str, Any] = field(repr=False, compare=False)
    image: ImageRef | None = None
    scene_graph: SceneGraph | None = field(default=None, repr=False, compare=False)
    source: str = ""

    def focus(self) -> Focus:
        return focus_for(self.raw, self.question_type)


def check_question(qid: str, q: Any, file: str, line: int) -> str:
    """Validate one questions-JSON entry; returns its image id."""
    if not isinstance(q, dict):
        raise DataFormatError(file, line, f"question {quote(qid)} is not an object")
    missing = [k for k in ("imageId", "question") if k not in q]
    if missing:
        raise DataFormatError(file, line, f"question {quote(qid)} lacks {', '.join(missing)}")
    return str(q["imageId"])


def iter_scene_graphs(source: str | os.PathLike[str] | BinaryIO, *, name: str | None = None,
                      on_bad=None) -> Iterator[SceneGraph]:
    """Each graph of a ``*_sceneGraphs.json`` file, streamed. A graph that does not parse goes
    to `on_bad(reason, DataFormatError)` (or raises when None)."""
    label = name or str(getattr(source, "name", source))
    for m in iter_members(source, name=label):
        try:
            yield _graph(m.key, m.value, label, m.line)
        except DataFormatError as exc:
            if on_bad is None:
                raise exc.in_entry(m.entry) from None
            on_bad("bad scene graph", exc.in_entry(m.entry))


def _graph(image_id: str, value: Any, file: str, line: int | None) -> SceneGraph:
    if not isinstance(value, dict):
        raise DataFormatError(file, line, f"scene graph {quote(image_id)} is not an object")
    try:
        return SceneGraph.from_gqa(value, image_id=image_id)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataFormatError(file, line, f"scene graph {quote(image_id)}: {exc}") from None


class SceneGraphIndex:
    """Random access to the graphs of a (huge) scene-graph file by image id.

    Built by one streaming pass that keeps only each graph's byte span and line; `get` seeks
    and parses one graph. Recently used graphs are cached: questions about one image
    usually come together.
    """

    def __init__(self, path: str | os.PathLike[str], spans: dict[str, tuple[int, int, int]],
                 cache_size: int = 256) -> None:
        self.path = Path(path)
        self.spans = spans
        self._f: BinaryIO | None = None
        self._cache: OrderedDict[str, SceneGraph] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def build(cls, path: str | os.PathLike[str], progress=None) -> "SceneGraphIndex":
        """`progress(bytes_done)` is called as the pass goes (for a progress bar)."""
        spans: dict[str, tuple[int, int, int]] = {}
        for i, m in enumerate(iter_members(path)):
            spans[m.key] = (m.start, m.end, m.line)  # type: ignore[index]
            if progress is not None and i % 256 == 0:
                progress(m.end)
        if progress is not None:
            progress(os.path.getsize(path))
        return cls(path, spans)

    def __len__(self) -> int:
        return len(self.spans)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.spans

    def get(self, image_id: str) -> SceneGraph:
        """The graph (KeyError if the file has none); DataFormatError if it is malformed."""
        g = self._cache.get(image_id)
        if g is not None:
            self._cache.move_to_end(image_id)
            return g
        start, end, line = self.spans[image_id]
        if self._f is None:
            self._f = open(self.path, "rb")
        self._f.seek(start)
        try:
            value = json.loads(self._f.read(end - start))
        except ValueError as exc:
            raise DataFormatError(str(self.path), line,
                                  f"scene graph {quote(image_id)} changed on disk: {exc}") from None
        g = _graph(image_id, value, str(self.path), line)
        self._cache[image_id] = g
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return g

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "SceneGraphIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GQALoader(Loader[GQAQuestion]):
    """Questions of the chosen types (default: Lin & Srikanth's, of which a file needs only
    some), with image refs and, if asked, their scene graphs.

    Files: `questions` / `scene_graphs` name them under the root; otherwise the one
    ``*questions*.json`` (and ``*sceneGraphs*.json``) there or under ``questions/``,
    ``sceneGraphs/``. Images are ``images/<imageId>.jpg``.
    """

    kind = "gqa"
    # A questions file may lack some of them (a subset, another split): fine for this default,
    # while a type the user names that matches nothing is an error (base.Loader.unmet_categories).
    default_categories = SEED_QUESTION_TYPES

    def __init__(self, root, *, questions: str | None = None, scene_graphs: str | None = None,
                 with_scene_graphs: bool = False, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.questions_file = questions
        self.scene_graphs_file = scene_graphs
        self.with_scene_graphs = with_scene_graphs

    def _category(self, ex: GQAQuestion) -> Iterable[str]:
        return ([ex.question_type] if ex.question_type else []) + [v for v in ex.types.values() if v]

    def _examples(self) -> Iterator[GQAQuestion]:
        rel = self.find_file(("*questions*.json",), "gqa questions", self.questions_file,
                             subdirs=("", "questions", "questions1.2"))
        file = self.where(rel)
        index = self._scene_graph_index() if self.with_scene_graphs else None
        images = self.images(("images",))
        try:
            with self.root.open(rel) as f:
                for m in iter_members(f, name=file):
                    qid, q = str(m.key), m.value
                    try:
                        image_id = check_question(qid, q, file, m.line)
                        qtype = gqa_question_type(q)
                        types = _types(q)
                        if not self.wants(([qtype] if qtype else []) + list(types.values())):
                            continue
                        sg = None
                        if index is not None:
                            if image_id not in index:
                                raise DataFormatError(file, m.line, f"question {quote(qid)}: image {quote(image_id)} "
                                                                    f"has no scene graph")
                            sg = index.get(image_id)
                        image = images.resolve(f"{image_id}.jpg", file, m.line)
                    except DataFormatError as exc:
                        self.bad(_reason(exc), exc.in_entry(m.entry))
                        continue
                    yield GQAQuestion(qid, image_id, str(q["question"]), _opt(q.get("answer")),
                                      _opt(q.get("fullAnswer")), qtype, types, q, image, sg, f"{file}:{m.line}")
        finally:
            if index is not None:
                index.close()

    def _scene_graph_index(self) -> SceneGraphIndex:
        rel = self.find_file(("*sceneGraphs*.json",), "gqa scene graphs", self.scene_graphs_file,
                             subdirs=("", "sceneGraphs"))
        path = _local_file(self.root, rel)
        return SceneGraphIndex.build(path)


def _local_file(root: DataRoot, rel: str) -> Path:
    path = root.local_path(rel)
    if path is None:
        raise NotImplementedError(f"{root.describe(rel)}: the scene-graph join seeks in the file, so it "
                                  f"needs a local copy (store.get_file it first)")
    return path


def _types(q: Mapping[str, Any]) -> dict[str, str]:
    types = q.get("types")
    return {str(k): str(v) for k, v in types.items() if v} if isinstance(types, Mapping) else {}


def _opt(v: Any) -> str | None:
    return None if v is None else str(v)


def _reason(exc: DataFormatError) -> str:
    if exc.message.startswith("image not found"):
        return "missing image"
    if "has no scene graph" in exc.message:
        return "missing scene graph"
    if exc.message.startswith("scene graph"):
        return "bad scene graph"
    return "bad question"
