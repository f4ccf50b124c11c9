"""Scene graph -> captions: shapes-world captions, full descriptions and focused summaries.

Everything here reads a GQA-format ``SceneGraph``, so it serves the shapes world and real GQA
graphs alike (the GQA-Captions pipeline: describe the graph, then summarise it around the objects
a question names, within the text encoder's token limit). All outputs are deterministic functions
of the graph: objects are visited in ``SceneGraph.ids()`` order, never in random or hash order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Mapping, Sequence

# The caption styles a shapes dataset carries are the manifest's names (`data.*.captions`).
from orchestrator.manifest.schema import CAPTION_STYLES  # noqa: F401 (re-exported)

from . import spatial_rule
from .scene_graph import SceneGraph

TokenCounter = Callable[[str], int]
QuestionType = Literal["relation", "position", "existence"]
SPATIAL_RELATIONS = frozenset(spatial_rule.GQA_TO_GENEVAL)

# ---------------------------------------------------------------- English helpers

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_SIZE_WORDS = frozenset({"small", "large", "big", "little", "tiny", "huge", "giant", "tall", "short",
                         "long", "medium", "thin", "thick", "wide"})
# Names ending in "s" that are singular (or mass nouns), so the plural heuristic leaves them alone.
_SINGULAR_S = frozenset({"bus", "canvas", "lens", "gas", "glass", "grass", "dress", "cross", "moss",
                         "mattress", "cactus", "octopus", "tennis", "christmas", "walrus", "iris",
                         "bass", "compass", "asparagus", "hummus", "hibiscus", "chess", "press"})
# Relation names that are already a finite verb ("man has hat"), so no "is" goes before them.
_FINITE_VERBS = frozenset({"has", "have", "wears", "holds", "contains", "covers", "carries", "eats",
                           "touches", "surrounds", "uses", "rides", "shows", "watches", "plays",
                           "hangs", "says", "reads", "drinks", "throws", "catches", "hits"})


def number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def article(word: str) -> str:
    """'a' or 'an' by the sound heuristics of the first letters (good enough for GQA's names)."""
    w = word.lower()
    if w.startswith(("uni", "use", "usu", "eu", "one", "ukulele")):
        return "a"
    if w.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    return "an" if w[:1] in "aeiou" and w[:1] != "" else "a"


def pluralise(name: str) -> str:
    if is_plural(name):
        return name
    head, _, last = name.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def is_plural(name: str) -> bool:
    """Heuristic: GQA names like 'jeans', 'leaves', 'glasses' are plural; 'bus', 'grass' are not."""
    last = name.rsplit(" ", 1)[-1].lower()
    if last in _SINGULAR_S or last.endswith(("ss", "us", "is")):
        return False
    return last.endswith("s") and len(last) > 2


def join_list(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def order_adjectives(attrs: Iterable[str]) -> list[str]:
    """Size words first ('small red circle'), others in their given order, duplicates dropped."""
    seen: list[str] = []
    for a in attrs:
        if a and a not in seen:
            seen.append(a)
    return [a for a in seen if a in _SIZE_WORDS] + [a for a in seen if a not in _SIZE_WORDS]


def bare_phrase(name: str, attrs: Sequence[str] = (), count: int = 1) -> str:
    """Adjectives and noun without a determiner: 'red circle', 'yellow triangles'."""
    return " ".join(order_adjectives(attrs) + [pluralise(name) if count > 1 else name])


def noun_phrase(name: str, attrs: Sequence[str] = (), det: str = "a", count: int = 1) -> str:
    """'a red circle', 'the white table', 'two yellow triangles', 'jeans' (plural: no article)."""
    words = bare_phrase(name, attrs, count)
    if count > 1:
        return f"{number_word(count) if det in ('a', 'one') else det} {words}"
    if det == "a":
        return words if is_plural(name) else f"{article(words)} {words}"
    return f"{det} {words}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


# ---------------------------------------------------------------- referring to objects

def identify(sg: SceneGraph, oid: str, min_attrs: int = 0) -> list[str] | None:
    """Fewest leading attributes (at least `min_attrs`) that single the object out, or None.

    Another object matches a description when it has the same name and all its attributes.
    """
    obj = sg.objects[oid]
    others = [set(o.attributes) for k, o in sg.objects.items() if k != oid and o.name == obj.name]
    attrs = list(dict.fromkeys(obj.attributes))
    for k in range(min(min_attrs, len(attrs)), len(attrs) + 1):
        prefix = attrs[:k]
        if not any(set(prefix) <= o for o in others):
            return prefix
    return None


def reference(sg: SceneGraph, oid: str, det: str = "the") -> str:
    """A definite reference, e.g. 'the table' or, when there are two tables, 'the white table'."""
    obj = sg.objects[oid]
    attrs = identify(sg, oid)
    return noun_phrase(obj.name, obj.attributes if attrs is None else attrs, det=det)


# ---------------------------------------------------------------- shapes-world captions

def _groups(sg: SceneGraph, ids: Sequence[str]) -> list[tuple[str, tuple[str, ...], int]]:
    """(name, first attribute, count) groups in first-appearance order."""
    counts: dict[tuple[str, tuple[str, ...]], int] = {}
    for oid in ids:
        o = sg.objects[oid]
        key = (o.name, tuple(o.attributes[:1]))
        counts[key] = counts.get(key, 0) + 1
    return [(name, attrs, n) for (name, attrs), n in counts.items()]


def generic_caption(sg: SceneGraph, ids: Sequence[str] | None = None) -> str:
    """'a red circle and a blue square'; repeats are counted: 'two yellow triangles and a blue square'."""
    ids = sg.ids() if ids is None else ids
    return join_list([noun_phrase(n, a, "a", c) for n, a, c in _groups(sg, ids)])


# The relations a web caption draws from, in a fixed order (a frozenset's order varies by run).
WEB_RELATIONS = tuple(sorted(SPATIAL_RELATIONS))


def described_caption(sg: SceneGraph) -> str:
    """Every object with all its attributes, in order, no relation: 'a large yellow triangle, a small
    yellow triangle and a red circle'. Teaches a base every word a spatial caption describes objects
    with (sizes single out look-alikes there) while saying nothing about where they are."""
    return join_list([noun_phrase(o.name, o.attributes) for o in (sg.objects[k] for k in sg.ids())])


def web_caption(sg: SceneGraph, draw: int) -> str:
    """'a red circle above a blue square': the first two objects joined by relation WEB_RELATIONS[draw %
    4], a draw the caller makes independently of the layout, so the words say nothing about where
    things are. Mimics web alt-text, which uses spatial words often and unreliably (the seed
    paper's premise): a base learns to read prompts that contain relation words, yet not the
    relations, which stay for a spatially focused finetune to teach. One object: the generic caption."""
    ids = sg.ids()
    if len(ids) < 2:
        return generic_caption(sg, ids)
    a, b, *others = (_desc(sg, k)[0] for k in ids)
    core = f"{noun_phrase(*a)} {WEB_RELATIONS[draw % len(WEB_RELATIONS)]} {noun_phrase(*b)}"
    rest = _list_descs(others, (a, b))
    return f"{core}, and {rest}" if rest else core


def counting_caption(sg: SceneGraph) -> str:
    """Every group with its number: 'two yellow triangles and one blue square'."""
    groups = sorted(_groups(sg, sg.ids()), key=lambda g: -g[2])  # stable: ties keep appearance order
    return join_list([f"{number_word(c)} {bare_phrase(n, a, c)}" for n, a, c in groups])


Desc = tuple[str, tuple[str, ...]]  # (name, attributes) a phrase uses


def matching(sg: SceneGraph, desc: Desc) -> list[str]:
    """Ids of the objects a description fits: same name, and having all its attributes."""
    name, attrs = desc
    return [k for k in sg.ids() if sg.objects[k].name == name and set(attrs) <= set(sg.objects[k].attributes)]


def statement_truth(sg: SceneGraph, a: Desc, relation: str, b: Desc) -> tuple[int, int]:
    """('a <relation> b') -> (pairs of fitting objects for which the graph has the relation, all pairs).

    A caption counts as true when it holds for every pair (so it is true under any reading, even
    when a description fits several objects) and as false when it holds for none.
    """
    pairs = [(s, o) for s in matching(sg, a) for o in matching(sg, b) if s != o]
    held = sum(any(r.name == relation and r.object == o for r in sg.objects[s].relations) for s, o in pairs)
    return held, len(pairs)


@dataclass(frozen=True)
class SpatialFact:
    """The one relation a spatial caption states: `subject` <relation> `object` (GQA naming)."""
    subject: str
    relation: str
    object: str
    subject_desc: Desc
    object_desc: Desc
    rest: str = ""  # the other objects, mentioned after the relation

    def text(self, swapped: bool = False) -> str:
        a, b = (self.object_desc, self.subject_desc) if swapped else (self.subject_desc, self.object_desc)
        core = f"{noun_phrase(a[0], a[1])} {self.relation} {noun_phrase(b[0], b[1])}"
        return f"{core}, and {self.rest}" if self.rest else core

    def to_json(self) -> dict:
        def side(oid: str, desc: Desc) -> dict:
            return {"id": oid, "name": desc[0], "attributes": list(desc[1])}
        return {"subject": side(self.subject, self.subject_desc), "relation": self.relation,
                "object": side(self.object, self.object_desc)}


def _desc(sg: SceneGraph, oid: str) -> tuple[Desc, bool]:
    """Shortest identifying description with at least one attribute (the colour, for shapes);
    when none identifies the object, all its attributes. The flag says whether it identifies."""
    o = sg.objects[oid]
    attrs = identify(sg, oid, min_attrs=1)
    return (o.name, tuple(attrs if attrs is not None else dict.fromkeys(o.attributes))), attrs is not None


def choose_spatial_fact(sg: SceneGraph) -> SpatialFact | None:
    """Deterministically pick the relation a spatial caption states.

    Candidates are the graph's spatial relations whose caption is true for every object its
    descriptions fit. Preferred, in order: the reversed caption is false (the roles matter, as a
    Winoground swap needs); both descriptions identify one object; the pair has a single spatial
    relation (a clear, non-diagonal placement); canonical order of (subject, object). Of a pair's
    several relations, the dominant one (largest normalised GenEval component) is stated.
    """
    ids = sg.ids()
    descs = {oid: _desc(sg, oid) for oid in ids}
    best: tuple[tuple, SpatialFact] | None = None
    for rank, (s, o) in enumerate((s, o) for s in ids for o in ids if s != o):
        rels = list(dict.fromkeys(r.name for r in sg.objects[s].relations
                                  if r.object == o and r.name in SPATIAL_RELATIONS))
        if not rels:
            continue
        rel = _dominant(sg, s, o, rels)
        (sd, s_ok), (od, o_ok) = descs[s], descs[o]
        held, total = statement_truth(sg, sd, rel, od)
        if held != total:
            continue
        reversed_held, _ = statement_truth(sg, od, rel, sd)
        key = (reversed_held > 0, not (s_ok and o_ok), len(rels) > 1, rank)
        if best is None or key < best[0]:
            rest = [descs[k][0] for k in ids if k not in (s, o)]
            best = (key, SpatialFact(s, rel, o, sd, od, _list_descs(rest, (sd, od))))
    return best[1] if best else None


def _list_descs(descs: Sequence[Desc], mentioned: Iterable[Desc] = ()) -> str:
    """'a large green circle and two red squares': equal descriptions are counted, and ones
    already mentioned read 'another ...' / 'two more ...'."""
    counts: dict[Desc, int] = {}
    for d in descs:
        counts[d] = counts.get(d, 0) + 1
    seen = set(mentioned)
    parts = []
    for (name, attrs), n in counts.items():
        if (name, attrs) not in seen:
            parts.append(noun_phrase(name, attrs, "a", n))
        elif n == 1:
            parts.append(f"another {bare_phrase(name, attrs)}")
        else:
            parts.append(f"{number_word(n)} more {bare_phrase(name, attrs, n)}")
    return join_list(parts)


def _dominant(sg: SceneGraph, s: str, o: str, rels: list[str]) -> str:
    if len(rels) == 1:
        return rels[0]
    comp = spatial_rule.components(sg.objects[s].box, sg.objects[o].box)
    if comp is None:
        return rels[0]
    dx, dy = comp
    strength = {"to the left of": -dx, "to the right of": dx, "above": -dy, "below": dy}
    return max(rels, key=lambda r: (strength.get(r, 0.0), -rels.index(r)))


def spatial_caption(sg: SceneGraph) -> tuple[str, SpatialFact | None]:
    """'a red circle to the left of a blue square[, and a green triangle]'.

    Falls back to the generic caption (and no fact) when no relation can be stated truthfully,
    e.g. in one-object scenes.
    """
    fact = choose_spatial_fact(sg)
    return (fact.text() if fact else generic_caption(sg)), fact


# ---------------------------------------------------------------- facts, describe, summarise

@dataclass(frozen=True)
class Fact:
    kind: Literal["object", "relation", "position"]
    subject: str
    text: str
    object: str | None = None
    relation: str | None = None
    compact: tuple[str, ...] = ()  # shorter renderings, tried when not even this fact fits


def object_fact(sg: SceneGraph, oid: str) -> Fact:
    o = sg.objects[oid]
    verb = "are" if is_plural(o.name) else "is"
    phrase = noun_phrase(o.name, o.attributes)
    return Fact("object", oid, _sentence(f"there {verb} {phrase}"), compact=(phrase, o.name))


def relation_fact(sg: SceneGraph, s: str, rel: str, o: str) -> Fact:
    first = rel.split(" ", 1)[0].lower()
    copula = "" if first in _FINITE_VERBS else ("are " if is_plural(sg.objects[s].name) else "is ")
    text = _sentence(f"{reference(sg, s)} {copula}{rel} {reference(sg, o)}")
    short = f"{sg.objects[s].name} {rel} {sg.objects[o].name}"
    return Fact("relation", s, text, object=o, relation=rel, compact=(short,))


def position_fact(sg: SceneGraph, oid: str) -> Fact | None:
    """Where in the frame the object is (for GQA's position questions); None without image size."""
    o = sg.objects[oid]
    if not sg.width or not sg.height:
        return None
    cx, cy = (o.x + o.w / 2) / sg.width, (o.y + o.h / 2) / sg.height
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    where = (f"at the {v} {h}" if v and h else f"on the {h} side" if h else f"at the {v}" if v
             else "in the middle")
    verb = "are" if is_plural(o.name) else "is"
    return Fact("position", oid, _sentence(f"{reference(sg, oid)} {verb} {where} of the image"),
                compact=(f"{o.name} {where}",))


def facts(sg: SceneGraph, include_positions: bool = False) -> list[Fact]:
    """All facts in canonical order: objects (with attributes), [positions], then relations."""
    out = [object_fact(sg, oid) for oid in sg.ids()]
    if include_positions:
        out += [f for f in (position_fact(sg, oid) for oid in sg.ids()) if f is not None]
    seen: set[str] = set()
    for s, rel, o in sg.relations():
        f = relation_fact(sg, s, rel, o)
        if f.text not in seen:  # GQA repeats some relations verbatim
            seen.add(f.text)
            out.append(f)
    return out


def describe(sg: SceneGraph, include_positions: bool = False) -> str:
    """A full description: every object with its attributes, then every relation."""
    return " ".join(f.text for f in facts(sg, include_positions))


@dataclass(frozen=True)
class Focus:
    """What a question is about. `objects` holds object ids or names (names match every such object).

    GQA's types map as: detailed type 'position*' -> position; semantic 'rel' -> relation;
    semantic 'obj', 'attr' (and anything else) -> existence.
    """
    question_type: QuestionType
    objects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.question_type not in ("relation", "position", "existence"):
            raise ValueError(f"question_type must be relation, position or existence, not {self.question_type!r}")
        object.__setattr__(self, "objects", tuple(str(o) for o in self.objects))

    @classmethod
    def from_gqa_question(cls, q: Mapping) -> "Focus":
        """From a GQA questions-JSON entry: its types and the object ids its annotations name."""
        types = q.get("types", {}) or {}
        detailed, semantic = str(types.get("detailed", "")), str(types.get("semantic", ""))
        qt: QuestionType = ("position" if detailed.startswith("position") else
                            "relation" if semantic == "rel" else "existence")
        ids: list[str] = []
        for part in ("question", "answer", "fullAnswer"):
            for v in ((q.get("annotations", {}) or {}).get(part, {}) or {}).values():
                for oid in str(v).split(","):
                    if oid and oid not in ids:
                        ids.append(oid)
        return cls(qt, tuple(ids))

    def resolve(self, sg: SceneGraph) -> set[str]:
        out: set[str] = set()
        for ref in self.objects:
            if ref in sg.objects:
                out.add(ref)
                continue
            r = ref.strip().lower()
            out.update(k for k, o in sg.objects.items() if r in (o.name.lower(), pluralise(o.name.lower())))
        return out


def _score(f: Fact, focus: Focus, fset: set[str], neighbours: set[str]) -> int:
    """Relevance of one fact to the focus, higher first.

    Facts touching the focus objects outrank the rest; which kind comes first depends on the
    question: relations between focus objects (relation), where they are in the frame and their
    spatial relations (position), the objects with their attributes (existence). Objects related
    to a focus object come next, then other objects, then unrelated relations.
    """
    s_in = f.subject in fset
    o_in = f.object in fset if f.object is not None else False
    qt = focus.question_type
    if f.kind == "position":
        return 6 if s_in else 0
    if f.kind == "object":
        if s_in:
            return 6 if qt == "existence" else 5
        return 3 if f.subject in neighbours else 1
    # relation facts
    if s_in and o_in:
        return {"relation": 6, "position": 4, "existence": 5}[qt]
    if s_in or o_in:
        if qt == "position" and f.relation in SPATIAL_RELATIONS:
            return 4
        return 3 if qt == "position" else 4
    return 0


def rank_facts(sg: SceneGraph, focus: Focus | None) -> list[Fact]:
    """Facts most relevant to the focus first; ties keep the canonical order (stable sort)."""
    if focus is None:
        return facts(sg)
    fset = focus.resolve(sg)
    base = facts(sg)
    if focus.question_type == "position":
        pos = [position_fact(sg, oid) for oid in sg.ids() if oid in fset]
        base = [f for f in pos if f is not None] + base
    neighbours = {o for s, _, o in sg.relations() if s in fset} | {s for s, _, o in sg.relations() if o in fset}
    neighbours -= fset
    return sorted(base, key=lambda f: -_score(f, focus, fset, neighbours))


# ---------------------------------------------------------------- token budget

_PIECE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]+")


def approx_token_count(text: str) -> int:
    """Approximate CLIP token count: letter runs (one piece per 10 letters), single digits and
    punctuation runs, as CLIP's pre-tokeniser splits them, plus its start and end tokens."""
    n = 0
    for piece in _PIECE.findall(text):
        n += 1 + (len(piece) - 1) // 10 if piece[0].isalpha() else 1
    return n + 2


def truncate_words(text: str, max_tokens: int, token_count: TokenCounter = approx_token_count) -> str:
    """Drop whole words from the end until the text fits (never cuts inside a word)."""
    words = text.split()
    while words and token_count(" ".join(words)) > max_tokens:
        words.pop()
    return " ".join(words)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def fit_text(text: str, max_tokens: int, token_count: TokenCounter = approx_token_count) -> str:
    """Shorten free text to the budget: drop trailing sentences; if even the first sentence is too
    long, drop its trailing words. Text that fits is returned unchanged (whitespace-normalised)."""
    text = " ".join(text.split())
    if token_count(text) <= max_tokens:
        return text
    kept: list[str] = []
    for sent in _SENTENCE_END.split(text):
        if token_count(" ".join(kept + [sent])) > max_tokens:
            break
        kept.append(sent)
    return " ".join(kept) if kept else truncate_words(text, max_tokens, token_count)


def summarise(sg: SceneGraph, focus: Focus | None = None, max_tokens: int = 77,
              token_count: TokenCounter | None = None) -> str:
    """A description focused on `focus`, within `max_tokens` as measured by `token_count`.

    Facts go in relevance order; once the next fact would overflow the budget, it and every less
    relevant fact are dropped. If not even the most relevant fact fits, its compact renderings are
    tried ('a green apple', then 'apple'), and the last is cut at a word boundary if need be.
    Pass a real tokenizer's length, e.g. ``lambda s: len(tok(s).input_ids)``.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    count = token_count or approx_token_count
    ranked = rank_facts(sg, focus)
    kept: list[str] = []
    for f in ranked:
        if count(" ".join(kept + [f.text])) > max_tokens:
            break
        kept.append(f.text)
    if kept or not ranked:
        return " ".join(kept)
    for short in ranked[0].compact:
        if count(short) <= max_tokens:
            return short
    return truncate_words((ranked[0].compact or (ranked[0].text,))[-1], max_tokens, count)
