"""Confinement of every location a client can name, through a real `orch serve`.

Every location field of the schema (found the way the schema checks them: each validator that
calls `_check_exists`, plus storage.blobs), at every place its section sits in a manifest, gets
every probe: `://` inside a path (the hole that leaked a worker's environment), file:// to
outside, relative file://, symlinks, `..`, `~`, NUL, scheme look-alikes, 5,000-character paths,
as written and swept; loader options too. Each is 422 naming the field, nothing is created or
journaled, and an outside target that exists (a FIFO: opening it would hang the head) gets the
same answer as one that does not. What a valid manifest stores for its workers is the resolved path.
"""
from __future__ import annotations

import ast
import copy
import inspect
import json
import os
import time
import typing

import pytest
import yaml
from pydantic import BaseModel

from orchestrator.journal import open_journal
from orchestrator.manifest import schema
from tests.api_server import Head, start_head, stop_head

pytest.importorskip("psutil")

BASE = {"name": "probe", "model": {"variant": "sd", "base": "tiny-random", "resolution": 32},
        "data": {"train": {"kind": "shapes", "captions": "spatial", "n": 8}},
        "train": {"steps": 2, "batch_size": 2}}
# Where each location field needs company to be read at all (its section's required fields).
SECTION_EXTRAS = {"data.train.root": {"data.train": {"kind": "imagefolder"}},
                  "data.eval.root": {"data.eval": {"kind": "imagefolder"}}}
SWEEPABLE = ("model.", "data.")


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _where(model: type[BaseModel], prefix: str = "") -> dict[type, list[str]]:
    """Each section class -> the dotted paths it sits at in a manifest."""
    out: dict[type, list[str]] = {model: [prefix]}
    for name, f in model.model_fields.items():
        for sub in _models(f.annotation):
            for cls, paths in _where(sub, f"{prefix}{name}.").items():
                out.setdefault(cls, []).extend(paths)
    return out


def location_fields() -> list[str]:
    """Every dotted field whose validator calls _check_exists (read from schema.py's source)."""
    tree = ast.parse(inspect.getsource(schema))
    found: dict[str, list[str]] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            calls = {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            if "_check_exists" not in calls:
                continue
            for dec in fn.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "field_validator":
                    found.setdefault(cls.name, []).extend(a.value for a in dec.args if isinstance(a, ast.Constant))
    where = {cls.__name__: paths for cls, paths in _where(schema.Manifest).items()}
    fields = sorted({f"{p}{field}" for cls, names in found.items() for p in where[cls] for field in names})
    # and each variant's path options (PathOption fields of its options section, `model.<variant>`)
    from orchestrator.models.registry import get_variant, names

    fields += [f"model.{name}.{option}" for name in names() for option in get_variant(name).path_options]
    assert len(fields) >= 10, f"the schema's location fields were not found: {fields}"
    return fields + ["storage.blobs"]


def _set(doc: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[leaf] = value


def manifest_with(field: str, value: str, swept: bool = False, name: str = "probe") -> bytes:
    doc = copy.deepcopy(BASE)
    doc["name"] = name
    for section, extra in SECTION_EXTRAS.get(field, {}).items():
        _set(doc, section, {**extra})
    if swept:
        doc["sweep"] = {"grid": {field: ["tiny-random" if field == "model.base" else value, value]}}
        if field != "model.base":
            _set(doc, field, value)
    else:
        _set(doc, field, value)
    return yaml.safe_dump(doc, sort_keys=False).encode()


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Head:
    h = start_head(tmp_path_factory.mktemp("confine"))
    outside = h.root / "outside"
    outside.mkdir()
    os.mkfifo(outside / "fifo")  # exists; whatever opens it to read blocks, so a read would hang the test
    (h.data_root / "link-out").symlink_to(outside)
    (h.state_dir / "c:").mkdir(parents=True, exist_ok=True)  # what `storage.blobs: file://./c:` creates
    yield h
    stop_head(h)


def paired_probes(h: Head) -> dict[str, str]:
    """Probes with a target name T: each is tried with T an existing FIFO outside and a missing file."""
    o, s, d = h.root / "outside", h.state_dir, h.data_root
    up = "../" * 40
    return {
        "scheme-inside-path": f"{s}/c://{up}{str(o)[1:]}/T",
        "colon-dotdot": f"{s}/c:/{up}{str(o)[1:]}/T",
        "file-uri-outside": f"file://{o}/T",
        "file-uri-relative": f"file://{up}{str(o)[1:]}/T",
        "symlink-out": f"{d}/link-out/T",
        "dotdot": f"{d}/../outside/T",
        "relative-dotdot": f"{up}{str(o)[1:]}/T",
        "absolute": f"{o}/T",
    }


REFUSED = ["AZ://abc/x", "azure://abc/x", "s3://bucket/x", "http://127.0.0.1:1/x", "az://UPPER/x",
           "az://abc/../x", "az://a/x", "~/T", "a" * 5000, "a/" * 2500, "bad\0nul", "bell\x07"]
REFUSAL_WORDS = ("outside the head's allowed roots", "unsupported scheme", "container name", "too long",
                 "control character", "'..'", "blob key")


def state(h: Head) -> tuple:
    with open_journal(h.journal_url, create=False) as j:
        exps, n = [e.experiment_id for e in j.list_experiments()], len(j.events())
    files = sorted(str(p.relative_to(h.root)) for p in h.root.rglob("*") if "runs" not in p.parts
                   and p.name != "serve.log")
    return exps, n, files


def post(h: Head, body: bytes) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    status, answer = h.json("POST", "/v1/experiments", body, timeout=20)
    return status, answer, time.monotonic() - t0


def refusal(answer: dict, field: str) -> str:
    hits = [e for e in answer.get("errors", []) if e["path"] == field]
    assert hits, (field, answer)
    assert any(w in hits[0]["message"] for w in REFUSAL_WORDS), (field, hits[0])
    assert len(hits[0]["message"]) < 400, hits[0]  # a 5,000-character path is not echoed back
    return hits[0]["message"]


def test_every_probe_on_every_location_field_is_422_and_touches_nothing(head):
    fields = location_fields()
    before = state(head)
    slowest = 0.0
    for field in fields:
        for swept in (False, True) if field.startswith(SWEEPABLE) else (False,):
            for label, probe in paired_probes(head).items():
                answers = []
                for target in ("fifo", "none"):  # same length: the echo is cut alike
                    status, answer, took = post(head, manifest_with(field, probe.replace("/T", f"/{target}"), swept))
                    assert status == 422, (field, swept, label, target, answer)
                    answers.append(refusal(answer, field).replace(target, "T"))
                    slowest = max(slowest, took)
                assert answers[0] == answers[1], (field, label, answers)  # existence is not told
            for probe in REFUSED:
                status, answer, took = post(head, manifest_with(field, probe, swept))
                assert status == 422, (field, swept, probe[:40], answer)
                if "\0" not in probe and "\x07" not in probe:  # those may be refused by the YAML reader first
                    refusal(answer, field)
                slowest = max(slowest, took)
    assert slowest < 5, slowest
    assert state(head) == before


def test_loader_options_stay_under_their_root(head):
    (head.data_root / "gqa").mkdir(exist_ok=True)
    (head.data_root / "gqa" / "link-out").symlink_to(head.root / "outside")
    before = state(head)
    for value in ("../../outside/fifo", "/etc/passwd", "file:///etc/passwd", "link-out/fifo", "az://abc/x",
                  "x://y", "~/.ssh/id_rsa"):
        doc = copy.deepcopy(BASE)
        doc["data"]["train"] = {"kind": "gqa-captions", "root": str(head.data_root / "gqa"),
                                "options": {"questions": value}}
        status, answer, _ = post(head, yaml.safe_dump(doc).encode())
        assert status == 422, (value, answer)
        hits = [e for e in answer["errors"] if e["path"] == "data.train.options.questions"]
        assert hits and hits[0]["line"] is not None, (value, answer)
    assert state(head) == before


def test_what_the_workers_load_is_the_resolved_path(head):
    real = head.data_root / "bench"
    real.mkdir(exist_ok=True)
    (real / "bench.csv").write_text("Prompts,Category\na red circle,Positional\n")
    (head.data_root / "link-in").symlink_to(real)
    doc = copy.deepcopy(BASE)
    doc["name"] = "resolved"
    doc["train"]["steps"] = 1
    doc["eval"] = {"drawbench": {"file": str(head.data_root / "link-in" / ".." / "link-in" / "bench.csv")}}
    doc["storage"] = {"blobs": "file://./c:"}
    body = yaml.safe_dump(doc, sort_keys=False).encode()
    status, answer = head.json("POST", "/v1/experiments", body)
    assert status == 201, answer
    import hashlib
    stored = yaml.safe_load((head.state_dir / f"{hashlib.sha256(body).hexdigest()}.yaml").read_text())
    assert stored["eval"]["drawbench"]["file"] == str((real / "bench.csv").resolve())
    assert stored["storage"]["blobs"] == str((head.state_dir / "c:").resolve())
    head.json("POST", f"/v1/experiments/{answer['experiment_id']}/cancel")
    # a swept location is written out trial by trial, each resolved
    doc = copy.deepcopy(BASE)
    doc["name"] = "resolved-swept"
    doc["eval"] = {"clip": str(head.data_root / "link-in")}
    doc["sweep"] = {"grid": {"train.lr": [1e-4, 2e-4]}}
    body = yaml.safe_dump(doc, sort_keys=False).encode()
    status, answer = head.json("POST", "/v1/experiments", body)
    assert status == 201, answer
    stored = yaml.safe_load((head.state_dir / f"{hashlib.sha256(body).hexdigest()}.yaml").read_text())
    assert stored["eval"]["clip"] == str(real.resolve())
    assert stored["sweep"] == {"trials": [{"train.lr": 1e-4}, {"train.lr": 2e-4}]}, json.dumps(stored["sweep"])
    assert answer["trials"] == 2
    head.json("POST", f"/v1/experiments/{answer['experiment_id']}/cancel")
