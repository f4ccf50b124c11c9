"""VQAv2 in two forms.

Raw (``layout="raw"``): the official questions JSON ``{info, task_type, data_type, data_subtype,
questions: [{image_id, question, question_id}]}`` and, where the split has answers, the
annotations JSON ``{annotations: [{question_id, image_id, answers: [{answer, answer_confidence,
answer_id}], multiple_choice_answer, answer_type, question_type}]}``. Both are streamed; the
join keeps one compact tuple per question. Examples come in questions order. Images are
``<data_subtype>/COCO_<data_subtype>_<12-digit id>.jpg`` (also looked up under ``images/``).
Categories filter on answer_type ("yes/no", "number", "other").

Text (``layout="text"``): the question+answer-as-text CSV used for image-text matching,
``sentence, pos_image_id, neg_sentence_1 .. neg_sentence_9`` (the sentence is "question
answer"); a 10-way text choice per row. Its images are ``train2014`` for a file with "train" in
its name, else ``val2014`` (override with `image_split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Sequence

from ..json_stream import iter_members
from .base import Loader, TextChoice, as_int, coco_name, read_csv
from .errors import DataFormatError
from .images import ImageRef

N_NEGATIVES = 9


@dataclass(frozen=True)
class VQAExample:
    question_id: int
    image_id: int
    question: str
    image: ImageRef
    answers: tuple[str, ...]  # the ten human answers (empty without annotations)
    multiple_choice_answer: str | None
    answer_type: str | None
    question_type: str | None
    source: str


@dataclass(frozen=True)
class VQATextExample:
    index: int
    image_id: int
    image: ImageRef
    texts: tuple[str, ...]  # texts[0] is the right "question answer" sentence
    source: str

    def text_choice(self) -> TextChoice:
        return TextChoice(self.image, self.texts, 0)


class VQAv2Loader(Loader[Any]):
    kind = "vqav2"

    def __init__(self, root, *, layout: Literal["raw", "text"] | None = None, questions: str | None = None,
                 annotations: str | None = None, csv: str | None = None, image_split: str | None = None,
                 **kw: Any) -> None:
        super().__init__(root, **kw)
        self.layout = layout
        self.questions_name = questions
        self.annotations_name = annotations
        self.csv_name = csv
        self.image_split = image_split

    def _category(self, ex: Any) -> Iterable[str]:
        return (ex.answer_type,) if isinstance(ex, VQAExample) and ex.answer_type else ()

    def _layout(self) -> str:
        if self.layout:
            return self.layout
        if self.questions_name or any(f.endswith("questions.json") for f in self.root.files()):
            return "raw"
        if self.csv_name or any(f.endswith(".csv") for f in self.root.files()):
            return "text"
        raise FileNotFoundError(f"vqav2: no *questions.json nor *.csv under {self.root.describe()}")

    def _examples(self) -> Iterator[Any]:
        if self._layout() == "raw":
            yield from self._raw()
        else:
            yield from self._text()

    # ---- raw JSON ---------------------------------------------------------------------------
    def _raw(self) -> Iterator[VQAExample]:
        q_rel = self.find_file(("*questions.json",), "vqav2 questions", self.questions_name)
        q_file = self.where(q_rel)
        questions: dict[int, tuple[int, str, int]] = {}  # qid -> (image_id, question, line)
        entries: dict[int, str] = {}  # qid -> where it is in the file (one-line files: index and byte)
        order: list[int] = []
        subtype = self.image_split
        with self.root.open(q_rel) as f:
            for m in iter_members(f, name=q_file, expand=("questions",)):
                if m.key == "data_subtype" and subtype is None:
                    subtype = str(m.value)
                if m.key != "questions":
                    continue
                try:
                    q = m.value
                    if not isinstance(q, dict) or any(k not in q for k in ("question_id", "image_id", "question")):
                        raise DataFormatError(q_file, m.line, "question needs question_id, image_id and question")
                    qid = as_int(q["question_id"], q_file, m.line, "question_id")
                    questions[qid] = (as_int(q["image_id"], q_file, m.line, "image_id"), str(q["question"]), m.line)
                    entries[qid] = m.entry
                    order.append(qid)
                except DataFormatError as exc:
                    self.bad("bad question", exc.in_entry(m.entry))
        if subtype is None:
            raise DataFormatError(q_file, None, "no data_subtype (e.g. val2014) to name the images by; "
                                                "pass image_split")
        resolver = self.images((subtype, f"images/{subtype}", "images", ""))

        answers = self._annotations(q_file, questions) if self._has_annotations() else {}
        for qid in order:
            image_id, text, line = questions[qid]
            ann = answers.get(qid)
            if answers and ann is None:
                self.bad("question without annotation",
                         DataFormatError(q_file, line, f"question {qid} has no annotation", entry=entries[qid]))
                continue
            if not self.wants([ann[2]] if ann and ann[2] else []):
                continue
            try:
                image = resolver.resolve(coco_name(subtype, image_id), q_file, line)
            except DataFormatError as exc:
                self.bad("missing image", exc.in_entry(entries[qid]))
                continue
            yield VQAExample(qid, image_id, text, image, *(ann or ((), None, None, None)), source=f"{q_file}:{line}")

    def _has_annotations(self) -> bool:
        return bool(self.annotations_name) or any(f.endswith("annotations.json") for f in self.root.files())

    def _annotations(self, q_file: str, questions: dict[int, tuple[int, str, int]]
                     ) -> dict[int, tuple[tuple[str, ...], str | None, str | None, str | None]]:
        rel = self.find_file(("*annotations.json",), "vqav2 annotations", self.annotations_name)
        file = self.where(rel)
        out: dict[int, tuple[tuple[str, ...], str | None, str | None, str | None]] = {}
        with self.root.open(rel) as f:
            for m in iter_members(f, name=file, expand=("annotations",)):
                if m.key != "annotations":
                    continue
                a = m.value
                try:
                    if not isinstance(a, dict) or "question_id" not in a or not isinstance(a.get("answers"), list):
                        raise DataFormatError(file, m.line, "annotation needs question_id and an answers list")
                    qid = as_int(a["question_id"], file, m.line, "question_id")
                    if qid not in questions:
                        raise DataFormatError(file, m.line, f"annotation for question {qid}, which {q_file} lacks")
                    answers = tuple(str(x.get("answer", "")) for x in a["answers"] if isinstance(x, dict))
                    out[qid] = (answers, _opt(a.get("multiple_choice_answer")), _opt(a.get("answer_type")),
                                _opt(a.get("question_type")))
                except DataFormatError as exc:
                    self.bad("bad annotation", exc.in_entry(m.entry))
        return out

    # ---- question+answer text CSV -----------------------------------------------------------
    def _text(self) -> Iterator[VQATextExample]:
        rel = self.find_file(("*.csv",), "vqav2 text csv", self.csv_name)
        file = self.where(rel)
        split = self.image_split or ("train2014" if "train" in rel.rsplit("/", 1)[-1] else "val2014")
        resolver = self.images((split, f"images/{split}", "images", ""))
        cols: list[Sequence[str]] = [("sentence",), ("pos_image_id",)] + \
            [(f"neg_sentence_{i}",) for i in range(1, N_NEGATIVES + 1)]
        with self.root.open(rel) as f:
            _, rows = read_csv(f, file, cols, self.bad)
            for index, row in enumerate(rows):
                v = row.values
                try:
                    sentence = v["sentence"].strip()
                    if not sentence:
                        raise DataFormatError(file, row.line, "empty sentence")
                    image_id = as_int(v["pos_image_id"].strip(), file, row.line, "pos_image_id")
                    image = resolver.resolve(coco_name(split, image_id), file, row.line)
                except DataFormatError as exc:
                    self.bad("missing image" if exc.message.startswith("image not found") else "bad row", exc)
                    continue
                # Negatives are kept as written: the published file has a few empty answers.
                negs = tuple(v[f"neg_sentence_{i}"].strip() for i in range(1, N_NEGATIVES + 1))
                yield VQATextExample(index, image_id, image, (sentence, *negs), f"{file}:{row.line}")


def _opt(v: Any) -> str | None:
    return None if v is None else str(v)
