"""GQA-Captions: real GQA scene graphs -> focused captions, one record per selected question.

    build_gqa_captions(Path("train_sceneGraphs.json"), Path("train_balanced_questions.json"),
                       "file://./runs/gqa-captions", images="/data/gqa/images")

Questions are selected by type (Lin & Srikanth's relation, position and existence questions by
default, optionally at most `max_per_image` per image); each becomes a record {question_id,
image_id, image, caption, question, answer, question_type, scene_graph_id}, its caption the
image's scene graph summarised around the objects the question names (`captions.summarise`).
The output is a shard dataset (`shards`): fixed-size content-addressed shards + index.json.

Memory stays bounded: both files are streamed, and graphs are fetched by byte offset from a
`SceneGraphIndex` built in a first pass.

Resumable: a shard is written as soon as it is full, then ``progress.json`` records it (with
how many selected questions it consumed and its skips). A restart with the same inputs and
options skips the finished shards' questions without captioning them and carries on; since
shard boundaries and contents are functions of the inputs alone, the final output is
byte-identical to an uninterrupted run's, and no record is written twice. The index is written
last and progress.json removed: a store with an index holds a complete build.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from orchestrator.storage import BlobStore, open_store

from .captions import TokenCounter, summarise
from .json_stream import iter_members
from .loaders.errors import DataFormatError, ErrorPolicy, OnError, SkipReport
from .loaders.gqa import (
    QUESTION_TYPES,
    SEED_QUESTION_TYPES,
    SceneGraphIndex,
    check_question,
    focus_for,
    gqa_question_type,
)
from .loaders.images import ImageResolver, open_root
from .shards import INDEX_NAME, SHARD_DIR, ShardIndex, ShardInfo, ShardReader, put_shard, write_index

FORMAT = "gqa-captions/1"
PROGRESS_NAME = "progress.json"
DEFAULT_EXAMPLES_PER_SHARD = 4096
_FINGERPRINT_BYTES = 1 << 20


class BuildConflictError(ValueError):
    """The output already holds a build with other inputs or options."""


def build_gqa_captions(scene_graphs: str | os.PathLike[str], questions: str | os.PathLike[str], out_uri: str, *,
                       question_types: Sequence[str] = SEED_QUESTION_TYPES, max_tokens: int = 77,
                       max_per_image: int | None = None,
                       examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD,
                       images: str | None = None, on_error: OnError = "raise",
                       token_count: TokenCounter | None = None, progress: bool = True,
                       overwrite: bool = False, workers: int = 1,
                       store: BlobStore | None = None) -> dict[str, Any]:
    """Build (or finish, or confirm) GQA-Captions at `out_uri`; returns a summary dict.

    `images`: GQA's images folder (path or blob URI). When given, every record's image must
    exist there (missing: error, or a counted skip with on_error="skip") and the index records
    it so loaders resolve ``<image_id>.jpg`` against it. `overwrite` replaces a build made
    with other inputs or options instead of refusing. `workers` > 1 captions in that many
    processes (Linux fork); the output is the same for any number of workers.
    """
    started = time.perf_counter()
    sg_path, q_path = Path(scene_graphs), Path(questions)
    types = sorted(set(question_types))
    bad = [t for t in types if t not in QUESTION_TYPES]
    if bad or not types:
        raise ValueError(f"question_types must be among {', '.join(QUESTION_TYPES)}; got {list(question_types)}")
    if max_tokens < 1 or examples_per_shard < 1 or (max_per_image is not None and max_per_image < 1):
        raise ValueError("max_tokens, examples_per_shard and max_per_image must be positive")
    for p in (sg_path, q_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found")
    params = {
        "format": FORMAT, "scene_graphs": _fingerprint(sg_path), "questions": _fingerprint(q_path),
        "question_types": types, "max_tokens": max_tokens, "max_per_image": max_per_image,
        "examples_per_shard": examples_per_shard, "images_root": images, "on_error": on_error,
        "token_counter": getattr(token_count, "__name__", "custom") if token_count else "approx",
    }
    store = store or open_store(out_uri)

    if store.exists(INDEX_NAME):
        reader = ShardReader(store)
        if reader.meta.get("params") == params:
            return _summary(out_uri, reader.index, SkipReport(), started, resumed=len(reader.index.shards),
                            already_complete=True)
        if not overwrite:
            raise BuildConflictError(f"{out_uri} already holds a GQA-Captions build with other inputs or options; "
                                     f"use another output or overwrite")
        _clear(store)
    state = _load_progress(store, params, out_uri, overwrite)

    builder = _Build(sg_path, q_path, params, store, state, token_count, on_error, progress, workers)
    index = builder.run()
    return _summary(out_uri, index, builder.skip_examples, started, resumed=builder.resumed_chunks)


# ---------------------------------------------------------------- the build

class _Build:
    def __init__(self, sg_path: Path, q_path: Path, params: dict[str, Any], store: BlobStore,
                 state: dict[str, Any], token_count: TokenCounter | None, on_error: OnError, progress: bool,
                 workers: int = 1) -> None:
        self.sg_path, self.q_path, self.params, self.store = sg_path, q_path, params, store
        self.chunks: list[dict[str, Any]] = state["chunks"]
        self.resumed_chunks = len(self.chunks)
        self.token_count = token_count
        self.on_error = on_error
        self.show = progress
        self.per_shard = params["examples_per_shard"]
        self.workers = max(1, workers)
        self.batch_size = 256 * self.workers
        self.skip_examples = SkipReport()
        for c in self.chunks:
            self.skip_examples.merge(SkipReport.from_dict(c["skips"]))
        root = params["images_root"]
        self.images = ImageResolver(open_root(root), ("",), check=True) if root else None

    def run(self) -> ShardIndex:
        with _progress_bar(self.show) as bar:
            task = bar.add_task("index scene graphs", total=os.path.getsize(self.sg_path), records=0)
            with SceneGraphIndex.build(self.sg_path, progress=lambda b: bar.update(task, completed=b)) as graphs:
                bar.update(task, records=len(graphs))
                qtask = bar.add_task("caption questions", total=os.path.getsize(self.q_path), records=0)
                self._questions(graphs, lambda done, n: bar.update(qtask, completed=done, records=n))
        by_type: Counter[str] = Counter()
        skips = SkipReport()
        for c in self.chunks:
            by_type.update(c["by_type"])
            skips.merge(SkipReport.from_dict(c["skips"]))
        meta = {"params": self.params, "by_type": dict(sorted(by_type.items())),
                "skipped": {"total": skips.total, "counts": dict(sorted(skips.counts.items()))},
                "images_root": self.params["images_root"],
                "fields": ["question_id", "image_id", "image", "caption", "question", "answer", "question_type",
                           "scene_graph_id"]}
        shards = tuple(ShardInfo(**c["shard"]) for c in self.chunks if c["shard"] is not None)
        index = ShardIndex(self.per_shard, shards, meta)
        write_index(self.store, "", index)
        self.store.delete(PROGRESS_NAME, missing_ok=True)
        return index

    def _questions(self, graphs: SceneGraphIndex, report: Callable[[int, int], None]) -> None:
        done_selected = self.chunks[-1]["consumed"] if self.chunks else 0
        written = sum(c["shard"]["count"] for c in self.chunks if c["shard"])
        selected = done_selected
        records: list[dict[str, Any]] = []
        by_type: Counter[str] = Counter()
        skips = SkipReport()
        policy = ErrorPolicy(self.on_error, skips)
        _Captioner.install(graphs, str(self.q_path), self.params, self.token_count, self.images)
        with _Pool(self.workers) as pool:
            for batch in _batches(self._work(done_selected), self.batch_size):
                for item, (record, error) in zip(batch, pool.map(batch)):
                    if error is not None:
                        policy(error[0], DataFormatError(*error[1:]))
                    if item.selected is None:
                        continue
                    selected = item.selected
                    if record is not None:
                        records.append(record)
                        by_type[record["question_type"]] += 1
                        if len(records) == self.per_shard:
                            written = self._finish_chunk(records, written, selected, by_type, skips)
                            records, by_type, skips = [], Counter(), SkipReport()
                            policy = ErrorPolicy(self.on_error, skips)
                report(batch[-1].end, written + len(records))
        if records or skips or not self.chunks or self.chunks[-1]["consumed"] != selected:
            written = self._finish_chunk(records, written, selected, by_type, skips)
        report(os.path.getsize(self.q_path), written)

    def _work(self, done_selected: int) -> Iterator[_Item]:
        """Selected questions (and malformed ones, to be reported) in file order.

        Questions up to the last finished shard's were handled before an interruption: they
        are selected again (selection is cheap and sets the per-image counts) but not sent
        to be captioned, and their errors were counted then.
        """
        wanted = set(self.params["question_types"])
        limit = self.params["max_per_image"]
        per_image: dict[str, int] = {}
        selected = 0
        file = str(self.q_path)
        for m in iter_members(self.q_path):
            replay = selected < done_selected
            qid, q = str(m.key), m.value
            try:
                image_id = check_question(qid, q, file, m.line)
            except DataFormatError as exc:
                if not replay:
                    yield _Item(None, m.end, error=("bad question", exc.file, exc.line, exc.message))
                continue
            qtype = gqa_question_type(q)
            if qtype not in wanted:
                continue
            if limit is not None:
                seen = per_image.get(image_id, 0)
                if seen >= limit:
                    continue
                per_image[image_id] = seen + 1
            selected += 1
            if not replay:
                yield _Item(selected, m.end, (qid, _slim(q), image_id, qtype, m.line))

    def _finish_chunk(self, records: list[dict[str, Any]], written: int, selected: int, by_type: Counter[str],
                      skips: SkipReport) -> int:
        """Store a shard, then record it in progress.json: the shard first, so progress never
        names a shard that is not there (a shard without progress is just rewritten)."""
        info = put_shard(self.store, "", records, written) if records else None
        self.skip_examples.merge(skips)
        self.chunks.append({"shard": info.to_json() if info else None, "consumed": selected,
                            "by_type": dict(by_type), "skips": skips.to_dict()})
        doc = {"params": self.params, "chunks": self.chunks}
        self.store.put(PROGRESS_NAME, json.dumps(doc, sort_keys=True).encode("utf-8"))
        return written + len(records)


# ---------------------------------------------------------------- captioning, in order

@dataclass(frozen=True)
class _Item:
    selected: int | None  # position among selected questions (None: a malformed question)
    end: int  # byte offset in the questions file, for the progress bar
    question: tuple[str, dict[str, Any], str, str, int] | None = None  # qid, q, image id, type, line
    error: tuple[str, str, int | None, str] | None = None  # reason, file, line, message


def _slim(q: dict[str, Any]) -> dict[str, Any]:
    """What captioning reads of a question (less to send to a worker)."""
    return {k: q[k] for k in ("question", "answer", "types", "annotations") if k in q}


class _Captioner:
    """Turns an item into (record, error). Installed before the pool forks, so workers share
    the scene-graph index's spans copy-on-write."""

    current: "_Captioner | None" = None

    def __init__(self, graphs: SceneGraphIndex, file: str, params: dict[str, Any],
                 token_count: TokenCounter | None, images: ImageResolver | None) -> None:
        self.graphs, self.file, self.params, self.token_count, self.images = graphs, file, params, token_count, images

    @classmethod
    def install(cls, *args: Any) -> None:
        cls.current = cls(*args)

    @staticmethod
    def run(item: _Item) -> tuple[dict[str, Any] | None, tuple[str, str, int | None, str] | None]:
        if item.question is None:
            return None, item.error
        try:
            return _Captioner.current.record(*item.question), None  # type: ignore[union-attr]
        except DataFormatError as exc:  # sent back as a tuple: it may cross a process boundary
            return None, (_reason(exc), exc.file, exc.line, exc.message)

    def record(self, qid: str, q: dict[str, Any], image_id: str, qtype: str, line: int) -> dict[str, Any]:
        if image_id not in self.graphs:
            raise DataFormatError(self.file, line, f"question {qid!r}: image {image_id!r} has no scene graph")
        sg = self.graphs.get(image_id)
        image = f"{image_id}.jpg"
        if self.images is not None:
            self.images.resolve(image, self.file, line)
        caption = summarise(sg, focus_for(q, qtype), self.params["max_tokens"], self.token_count)
        answer = q.get("answer")
        return {"question_id": qid, "image_id": image_id, "image": image, "caption": caption,
                "question": str(q["question"]), "answer": None if answer is None else str(answer),
                "question_type": qtype, "scene_graph_id": image_id}


class _Pool:
    """In-process for one worker; otherwise a fork pool whose results come back in input order
    (so the output does not depend on the number of workers), fed a batch at a time so a fast
    reader never queues the whole file for slow workers."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: Any = None

    def __enter__(self) -> "_Pool":
        if self.workers > 1:
            import multiprocessing

            self.pool = multiprocessing.get_context("fork").Pool(self.workers)
        return self

    def map(self, batch: list[_Item]) -> Iterator[tuple[dict[str, Any] | None, Any]]:
        if self.pool is None:
            return map(_Captioner.run, batch)  # lazily: a full shard is stored at once
        return iter(self.pool.map(_Captioner.run, batch, chunksize=max(1, len(batch) // (4 * self.workers))))

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _batches(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- helpers

def _fingerprint(path: Path) -> dict[str, Any]:
    """Name, size and a hash of the first and last MiB: tells a changed input from the same
    one without reading a gigabyte, and ignores where the file sits (copies still match)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            f.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            h.update(f.read())
    return {"name": path.name, "size": size, "sha256_head_tail": h.hexdigest()}


def _load_progress(store: BlobStore, params: dict[str, Any], out_uri: str, overwrite: bool) -> dict[str, Any]:
    if not store.exists(PROGRESS_NAME):
        return {"chunks": []}
    try:
        doc = json.loads(store.get(PROGRESS_NAME))
        ok = isinstance(doc, dict) and isinstance(doc.get("chunks"), list)
    except ValueError:
        ok = False
    if ok and doc["params"] == params:
        return doc
    if not overwrite:
        raise BuildConflictError(f"{out_uri} holds an unfinished GQA-Captions build with other inputs or options; "
                                 f"use another output or overwrite")
    _clear(store)
    return {"chunks": []}


def _clear(store: BlobStore) -> None:
    for key in [INDEX_NAME, PROGRESS_NAME, *store.list(f"{SHARD_DIR}/")]:
        store.delete(key, missing_ok=True)


def _reason(exc: DataFormatError) -> str:
    if "has no scene graph" in exc.message:
        return "missing scene graph"
    if exc.message.startswith("image not found"):
        return "missing image"
    return "bad scene graph"


def _summary(out_uri: str, index: ShardIndex, skips: SkipReport, started: float, *, resumed: int,
             already_complete: bool = False) -> dict[str, Any]:
    seconds = time.perf_counter() - started
    skipped = index.meta.get("skipped", {})
    return {"out": out_uri, "records": index.total, "shards": len(index.shards), "dataset_id": index.dataset_id,
            "by_type": index.meta.get("by_type", {}), "skipped": skipped.get("total", 0),
            "skip_counts": skipped.get("counts", {}), "skip_examples": skips.to_dict()["examples"],
            "resumed_shards": resumed, "already_complete": already_complete, "seconds": round(seconds, 3),
            "records_per_s": round(index.total / seconds, 1) if seconds > 0 and not already_complete else None}


def _progress_bar(show: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RecordRate(ProgressColumn):
        def render(self, task) -> Text:  # type: ignore[override]
            elapsed = task.elapsed or 0.0
            n = task.fields.get("records", 0)
            return Text(f"{n:,} rec" + (f" {n / elapsed:,.0f}/s" if elapsed > 0 else ""))

    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), RecordRate(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not show)
