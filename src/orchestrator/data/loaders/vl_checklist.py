"""VL-CheckList: corpus YAML files naming data JSON files of ``[img_path, {"POS": [...], "NEG": [...]}]``.

Layout (as the official repository's): ``corpus/<version?>/<Type>/<aspect>/<source>.yaml``, each
with ANNO_PATH (the JSON, relative to the root) and IMG_ROOT (the image folder, relative to the
root), and TYPE "TUPLE_JSON". A root that is a YAML file reads just that corpus. An entry's
category is its YAML path under ``corpus/`` without the extension (e.g.
"v1/Attribute/color/vg"); a category filter matches a run of its path segments, so
"Attribute/color" or "Relation" select what they say.

The official loader drops entries whose image is missing without a word; here that is an error
naming the JSON file and line, or a counted skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import yaml

from ..json_stream import iter_array
from .base import Loader, TextChoice
from .errors import DataFormatError, quote
from .images import ImageRef, ImageResolver, LocalRoot


@dataclass(frozen=True)
class VLCheckListExample:
    category: str
    image: ImageRef
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    source: str

    def text_choices(self) -> list[TextChoice]:
        """One (positive, negative) choice per pair, positive first."""
        return [TextChoice(self.image, (p, n), 0) for p, n in zip(self.pos, self.neg)]


class VLCheckListLoader(Loader[VLCheckListExample]):
    kind = "vl-checklist"

    def __init__(self, root, **kw: Any) -> None:
        super().__init__(root, **kw)
        # A root that is one corpus YAML: the repository root is the folder above its `corpus/`
        # (ANNO_PATH and IMG_ROOT are relative to it), or the YAML's own folder outside a corpus tree.
        self._single: str | None = None
        if isinstance(self.root, LocalRoot) and self.root.path.is_file():
            path = self.root.path
            if path.suffix not in (".yaml", ".yml"):
                raise FileNotFoundError(f"vl-checklist: root {path} is a file but not a corpus YAML (.yaml)")
            repo = next((d.parent for d in path.parents if d.name == "corpus"), path.parent)
            self.root, self._single = LocalRoot(repo), path.relative_to(repo).as_posix()

    def _category(self, ex: VLCheckListExample) -> Iterable[str]:
        return (ex.category,)

    def wants(self, categories: Iterable[str]) -> bool:
        if not self.categories:
            return True
        paths = [c.strip("/").lower().split("/") for c in categories]
        for want in self.categories:
            w = want.strip("/").lower().split("/")
            if any(p[i:i + len(w)] == w for p in paths for i in range(len(p) - len(w) + 1)):
                return True
        return False

    def _corpora(self) -> list[tuple[str, str]]:
        """(category, yaml relative path) for each corpus YAML."""
        if self._single is not None:
            rel = self._single
            category = (rel[len("corpus/"):] if rel.startswith("corpus/") else rel).rsplit(".", 1)[0]
            return [(category, rel)]
        found = [f for f in self.root.files("corpus", recursive=True) if f.endswith((".yaml", ".yml"))]
        if not found:
            raise FileNotFoundError(f"vl-checklist: no corpus/**/*.yaml under {self.root.describe()}")
        return [(f[len("corpus/"):].rsplit(".", 1)[0], f) for f in found]

    def _examples(self) -> Iterator[VLCheckListExample]:
        for category, rel in self._corpora():
            if not self.wants([category]):
                continue
            yield from self._corpus(category, rel)

    def _corpus(self, category: str, rel: str) -> Iterator[VLCheckListExample]:
        yfile = self.where(rel)
        try:
            config = yaml.safe_load(self.root.read_bytes(rel))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise DataFormatError(yfile, mark.line + 1 if mark else None, f"bad YAML: {exc}") from None
        if not isinstance(config, dict) or "ANNO_PATH" not in config:
            raise DataFormatError(yfile, 1, "corpus YAML needs ANNO_PATH (and IMG_ROOT)")
        kind = str(config.get("TYPE", "TUPLE_JSON"))
        if kind != "TUPLE_JSON":
            raise DataFormatError(yfile, 1, f"TYPE {quote(kind)} is not supported (only TUPLE_JSON)")
        anno = self._relative(str(config["ANNO_PATH"]), rel)
        if not self.root.is_file(anno):
            raise DataFormatError(yfile, 1, f"ANNO_PATH {self.where(anno)} not found")
        img_root = str(config.get("IMG_ROOT") or "").strip("/")
        resolver = ImageResolver(self.root.child(img_root) if img_root else self.root, ("",), self.check_images)
        file = self.where(anno)
        with self.root.open(anno) as f:
            for m in iter_array(f, name=file):
                try:
                    path, texts = _entry(m.value, file, m.line)
                    image = resolver.resolve(path, file, m.line)
                except DataFormatError as exc:
                    self.bad("missing image" if exc.message.startswith("image not found") else "bad entry",
                             exc.in_entry(m.entry))
                    continue
                yield VLCheckListExample(category, image, texts["POS"], texts["NEG"], f"{file}:{m.line}")

    def _relative(self, path: str, yaml_rel: str) -> str:
        """ANNO_PATH is relative to the root (the official repo's working directory); a path
        relative to the YAML's own folder is accepted too."""
        path = path.strip()
        path = path[2:] if path.startswith("./") else path
        if self.root.is_file(path):
            return path
        folder = yaml_rel.rpartition("/")[0]
        beside = f"{folder}/{path}" if folder else path
        return beside if self.root.is_file(beside) else path


def _entry(value: Any, file: str, line: int) -> tuple[str, dict[str, tuple[str, ...]]]:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict)):
        raise DataFormatError(file, line, 'entry is not [img_path, {"POS": [...], "NEG": [...]}]')
    texts = {}
    for k in ("POS", "NEG"):
        v = value[1].get(k)
        if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
            raise DataFormatError(file, line, f"entry's {k} is not a list of strings")
        texts[k] = tuple(v)
    return value[0], texts
