"""Stream a huge JSON object or array one member at a time, in bounded memory.

GQA's ``train_sceneGraphs.json`` is a single JSON object of over a gigabyte, ``{image_id: graph}``,
usually on one line; ``json.load`` would hold all of it (several times its size) at once. Here
the file is decoded incrementally into a sliding text buffer and each member's value is parsed
with the standard library's C scanner (``JSONDecoder.raw_decode``) as soon as it is complete, so
memory is bounded by the buffer plus the largest single value.

    for image_id, graph in iter_object("train_sceneGraphs.json"):
        ...
    for m in iter_members(path, spans=True):   # m.start/m.end: byte span of the value
        ...
    for _, q in iter_object(path, expand=("questions",)):   # items of a big nested array
        ...

Every error is a ``DataFormatError`` naming the file, the line, the column and the byte offset.
A syntax error ends the stream: nothing after it can be trusted to be framed correctly.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from dataclasses import dataclass
from json.decoder import scanstring
from typing import Any, BinaryIO, Collection, Iterator

from .loaders.errors import DataFormatError

DEFAULT_CHUNK_BYTES = 256 << 10  # larger buffers measured no faster
DEFAULT_MAX_VALUE_CHARS = 512 << 20  # one member this large is a broken file, not a scene graph
_WS = re.compile(r"[ \t\n\r]*")
_BOM = "\ufeff"


@dataclass(frozen=True)
class Member:
    """One member of the top-level container.

    `key` is the member's key (the array key for an expanded item; None for a top-level
    array's items); `index` counts items of an array (None for plain object members);
    `line` is where the value starts; `start`/`end` are the value's byte span in the file
    (``file[start:end]`` parses to `value`).
    """

    key: str | None
    value: Any
    line: int
    start: int
    end: int
    index: int | None = None

    @property
    def entry(self) -> str:
        """Where the member is, for messages: its array index (a keyed member's message names its
        key already) and its byte offset."""
        if self.index is None:
            return f"byte {self.start}"
        which = f"{self.key}[{self.index}]" if self.key is not None else f"entry {self.index}"
        return f"{which}, byte {self.start}"


def iter_object(source: str | os.PathLike[str] | BinaryIO, *, name: str | None = None,
                expand: Collection[str] = (), chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                max_value_chars: int = DEFAULT_MAX_VALUE_CHARS) -> Iterator[tuple[str, Any]]:
    """(key, value) for each member of a top-level JSON object, in file order.

    Keys in `expand` must hold arrays; they yield (key, item) once per item instead of the
    whole array, so ``{"info": ..., "questions": [...]}`` streams too.
    """
    for m in iter_members(source, name=name, expand=expand, chunk_bytes=chunk_bytes,
                          max_value_chars=max_value_chars, container="object"):
        yield m.key, m.value  # type: ignore[misc]


def iter_array(source: str | os.PathLike[str] | BinaryIO, *, name: str | None = None,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES,
               max_value_chars: int = DEFAULT_MAX_VALUE_CHARS) -> Iterator[Member]:
    """Members (with index and line) for each item of a top-level JSON array."""
    return iter_members(source, name=name, chunk_bytes=chunk_bytes, max_value_chars=max_value_chars,
                        container="array")


def iter_members(source: str | os.PathLike[str] | BinaryIO, *, name: str | None = None,
                 expand: Collection[str] = (), chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
                 container: str = "object") -> Iterator[Member]:
    """Members with their line and byte span. `container`: "object", "array" or "any"."""
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
        with open(source, "rb") as f:
            yield from _Stream(f, label, chunk_bytes, max_value_chars).members(set(expand), container)
    else:
        label = name or str(getattr(source, "name", "<stream>"))
        yield from _Stream(source, label, chunk_bytes, max_value_chars).members(set(expand), container)


def read_span(path: str | os.PathLike[str] | BinaryIO, start: int, end: int) -> Any:
    """Parse the value at a byte span recorded by `iter_members` (random access by offset)."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
    else:
        path.seek(start)
        data = path.read(end - start)
    try:
        return json.loads(data)
    except ValueError as exc:
        where = str(path) if isinstance(path, (str, os.PathLike)) else str(getattr(path, "name", "<stream>"))
        raise DataFormatError(where, None, f"value at bytes {start}..{end} does not parse: {exc}") from None


def _msg(exc: json.JSONDecodeError) -> str:
    return exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg  # "Unterminated string starting at"


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Stream:
    """A text buffer over a binary file with line and byte bookkeeping for the cursor.

    Invariant: `line` and `byte` describe ``buf[pos]``. The buffer is compacted only when it
    is refilled, so consuming a member costs no copy of the rest of the buffer.
    """

    def __init__(self, f: BinaryIO, name: str, chunk_bytes: int, max_value_chars: int) -> None:
        self.f = f
        self.name = name
        self.chunk = max(int(chunk_bytes), 64)
        self.max_value = max_value_chars
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1
        self.byte = 0
        self.raw_read = 0  # bytes read from the file (for decode errors)
        self.dropped = 0  # characters dropped from the buffer's front so far
        self.last_nl = -1  # absolute character index of the last newline before the cursor

    # ---- buffer ---------------------------------------------------------------------
    def fill(self, at_least: int = 0) -> bool:
        """Append more text; False at end of file. Drops the consumed prefix first."""
        if self.eof:
            return False
        if self.pos:
            self.buf = self.buf[self.pos:]
            self.dropped += self.pos
            self.pos = 0
        want = max(self.chunk, at_least)
        raw = self.f.read(want)
        try:
            if raw:
                self.raw_read += len(raw)
                text = self.decoder.decode(raw)
            else:
                self.eof = True
                text = self.decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            base = self.raw_read - len(raw)
            raise DataFormatError(self.name, None, f"not UTF-8 at byte {base + exc.start}: {exc.reason}") from None
        if self.byte == 0 and not self.buf and text.startswith(_BOM) and self.raw_read == len(raw):
            text = text[1:]
            self.byte = 3
        self.buf += text
        return bool(raw) or bool(text)

    def advance(self, new_pos: int) -> None:
        if new_pos > self.pos:
            newlines = self.buf.count("\n", self.pos, new_pos)
            if newlines:
                self.line += newlines
                self.last_nl = self.dropped + self.buf.rfind("\n", self.pos, new_pos)
            self.byte += _utf8_len(self.buf[self.pos:new_pos])
            self.pos = new_pos

    def skip_ws(self) -> str:
        """Move past whitespace; the next character, or '' at end of file."""
        while True:
            end = _WS.match(self.buf, self.pos).end()
            self.advance(end)
            if end < len(self.buf):
                return self.buf[end]
            if not self.fill():
                return ""

    def error(self, message: str, at: int | None = None) -> DataFormatError:
        at = self.pos if at is None else at
        line = self.line + self.buf.count("\n", self.pos, at) if at >= self.pos else self.line
        byte = self.byte + _utf8_len(self.buf[self.pos:at]) if at >= self.pos else self.byte
        nl = self.buf.rfind("\n", self.pos, at) if at > self.pos else -1
        column = at - nl if nl >= 0 else self.dropped + at - self.last_nl
        return DataFormatError(self.name, line, f"{message}, column {column} (byte {byte})")

    def definite(self, exc: json.JSONDecodeError) -> bool:
        """Whether a decode error is in the data rather than from the buffer ending too soon.

        Truncation makes the scanner fail at the buffer's edge (a literal cut short can
        fail a few characters before it), or at the start of an unterminated string; any
        other failure is in data already read, and reading on would only fill memory.
        """
        return exc.pos < len(self.buf) - 16 and not exc.msg.startswith("Unterminated string")

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if not c or c not in chars:
            found = repr(c) if c else "end of file"
            raise self.error(f"expected {what}, found {found}")
        self.advance(self.pos + 1)
        return c

    # ---- values -----------------------------------------------------------------------
    def key(self) -> str:
        start = self.pos  # at the opening quote
        while True:
            try:
                value, end = scanstring(self.buf, start + 1)
            except json.JSONDecodeError as exc:
                if self.eof or self.definite(exc) or len(self.buf) - start > self.max_value:
                    raise self.error(f"bad object key: {_msg(exc)}", exc.pos) from None
                self.fill(at_least=len(self.buf) - self.pos)
                start = self.pos
                continue
            self.advance(end)
            return value

    def value(self) -> tuple[Any, int, int, int]:
        """Decode the value at the cursor; (value, line, start byte, end byte)."""
        need = 0
        while True:
            try:
                value, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                pending = len(self.buf) - self.pos
                if self.eof or self.definite(exc):
                    raise self.error(f"invalid JSON: {_msg(exc)}", exc.pos) from None
                if pending > self.max_value:
                    raise self.error(f"a single value is larger than {self.max_value} characters "
                                     f"(truncated or not the expected layout)") from None
                # Read at least as much again as is pending: re-parsing a large value costs
                # O(its size) in total, not O(size^2 / chunk).
                need = max(need * 2, pending)
                self.fill(at_least=need)
                continue
            # A bare number at the buffer's edge may continue in the next chunk.
            if end >= len(self.buf) and not self.eof and self.fill():
                continue
            line, start = self.line, self.byte
            self.advance(end)
            return value, line, start, self.byte

    # ---- containers ---------------------------------------------------------------------
    def members(self, expand: set[str], container: str) -> Iterator[Member]:
        opener = {"object": "{", "array": "[", "any": "{["}[container]
        what = {"object": "a JSON object ('{')", "array": "a JSON array ('[')",
                "any": "a JSON object or array"}[container]
        c = self.expect(opener, what)
        if c == "{":
            yield from self._object_members(expand)
        else:
            yield from self._array_items(None)
        if self.skip_ws():
            raise self.error("unexpected data after the end of the top-level value")

    def _object_members(self, expand: set[str]) -> Iterator[Member]:
        if self.skip_ws() == "}":
            self.advance(self.pos + 1)
            return
        while True:
            c = self.skip_ws()
            if c != '"':
                raise self.error("expected a member key (a string in double quotes), found "
                                 + (repr(c) if c else "end of file"))
            key = self.key()
            self.expect(":", "':' after the key")
            if key in expand:
                self.expect("[", f"an array under key {key!r}")
                yield from self._array_items(key)
            else:
                self.skip_ws()
                value, line, start, end = self.value()
                yield Member(key, value, line, start, end)
            if self.expect(",}", "',' or '}' after a member") == "}":
                return

    def _array_items(self, key: str | None) -> Iterator[Member]:
        if self.skip_ws() == "]":
            self.advance(self.pos + 1)
            return
        index = 0
        while True:
            if not self.skip_ws():
                raise self.error("expected an array item, found end of file")
            value, line, start, end = self.value()
            yield Member(key, value, line, start, end, index)
            index += 1
            if self.expect(",]", "',' or ']' after an array item") == "]":
                return
