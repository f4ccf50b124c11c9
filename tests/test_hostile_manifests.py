"""Hostile manifests: each is refused within seconds with a clear error (file, field, line where
there is one), `orch validate` exits 2 with no traceback, and nothing is written. A bounded fuzz
test over the YAML and the schema holds the same line for inputs nobody thought of."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.manifest import ManifestError
from orchestrator.models.registry import load_checked_manifest

ORCH = str(Path(sys.executable).with_name("orch"))
GOOD = """\
name: ok
model: {variant: sd, base: tiny-random}
data: {train: {kind: shapes, n: 8}}
train: {steps: 2, batch_size: 4}
"""


def bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# (name, manifest text, a fragment of the message, the line it must name or None)
CORPUS = [
    ("recursive alias", "name: x\nfoo: &a [*a]\n", "recursive alias", 2),
    ("recursive mapping", "name: x\nfoo: &a {b: *a}\n", "recursive alias", 2),
    ("alias bomb", bomb(), "more than 100,000 values", None),
    ("deep nesting", "name: x\ndeep: " + "[" * 40 + "1" + "]" * 40 + "\n", "nested deeper than 32", None),
    ("control character", "name: x\ndescription: a\x07b\n", "not allowed", 2),
    ("bad float tag", GOOD + "description: !!float abc\n", "could not convert string to float", 5),
    ("bad int tag", GOOD + "description: !!int 1.5.6\n", "invalid YAML value", 5),
    ("python tag", GOOD + "description: !!python/object:os.system ls\n", "could not determine a constructor", 5),
    ("nan lr", GOOD.replace("batch_size: 4", "batch_size: 4, lr: .nan"), "not a finite number", 4),
    ("inf cpus", GOOD + "resources: {cpus_per_trial: .inf}\n", "not a finite number", 5),
    ("overflowing float", GOOD + "resources: {cpus_per_trial: 1e400}\n", "not a finite number", 5),
    ("nan in options", GOOD.replace("n: 8}", "n: 8, options: {x: -.inf}}"), "not a finite number", 3),
    ("nan swept", GOOD + "sweep:\n  grid:\n    train.lr: [1.0e-4, .nan]\n", "not a finite number", 7),
    ("huge sweep", GOOD + "sweep:\n  grid:\n" + "".join(
        f"    train.{k}: [{', '.join(str(v) for v in range(1, 12))}]\n"
        for k in ("steps", "batch_size", "grad_accum", "checkpoint_every")), "expands to 14,641 trials", 5),
    ("not a mapping", "- just\n- a list\n", "a manifest is a mapping", 1),
    ("not utf-8", None, "not UTF-8", 2),
]


def _write(tmp_path: Path, name: str, text: str | None) -> Path:
    path = tmp_path / f"{name.replace(' ', '-')}.yaml"
    if text is None:
        path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, fragment, line", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_is_refused_with_its_line(tmp_path, name, text, fragment, line):
    path = _write(tmp_path, name, text)
    started = time.perf_counter()
    with pytest.raises(ManifestError) as err:
        load_checked_manifest(path)
    assert time.perf_counter() - started < 5
    issues = err.value.issues
    assert any(fragment in i.message for i in issues), [str(i) for i in issues]
    if line is not None:
        assert line in {i.line for i in issues if fragment in i.message}, [str(i) for i in issues]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing written


def test_cli_exits_2_without_a_traceback(tmp_path):
    for name, text, fragment, _ in CORPUS[:6]:
        path = _write(tmp_path, name, text)
        r = subprocess.run([ORCH, "validate", str(path)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert r.returncode == 2 and "Traceback" not in r.stderr and fragment in r.stderr, (name, r.stderr)


def test_size_and_path_limits(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "description: " + "a" * (1 << 20) + "\n")
    with pytest.raises(ManifestError, match="a manifest is at most 1,048,576 bytes"):
        load_checked_manifest(big)
    long = tmp_path / ("x" * 5000 + ".yaml")
    with pytest.raises(ManifestError) as err:
        load_checked_manifest(long)
    (issue,) = err.value.issues
    assert "too long" in issue.message and len(str(issue)) < 400  # the path is shortened, not printed 3 times
    sweep = GOOD + "sweep: {grid: {train.steps: [1, 2, 3]}, seeds: [0, 1, 2, 3]}\n"
    (tmp_path / "s.yaml").write_text(sweep)
    monkeypatch.setenv("ORCH_MAX_TRIALS", "10")
    with pytest.raises(ManifestError, match="12 trials, more than the limit of 10"):
        load_checked_manifest(tmp_path / "s.yaml")
    monkeypatch.setenv("ORCH_MAX_TRIALS", "12")
    assert len(__import__("orchestrator.manifest", fromlist=["expand"]).expand(
        load_checked_manifest(tmp_path / "s.yaml"))) == 12


@pytest.mark.faults
def test_over_long_path_values_are_field_errors_not_os_errors(tmp_path):
    """A 300-character model.base (one name over NAME_MAX) and a 5,000-character data root: each
    a validation error with its field and line from `orch validate`, exit 2, no traceback."""
    import subprocess
    import sys

    for field, yaml_line in (("model.base", f"model: {{variant: sd, base: {'m' * 300}}}"),
                             ("data.train.root", f"data: {{train: {{kind: imagefolder, root: {'d/' * 2500}}}}}")):
        text = GOOD.replace(GOOD.splitlines()[1], yaml_line) if field == "model.base" else \
            GOOD.replace(GOOD.splitlines()[2], yaml_line)
        (tmp_path / "long.yaml").write_text(text)
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(tmp_path / "long.yaml")],
                           capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 2 and "Traceback" not in out and f"{field}: " in out and "too long" in out, out
        assert len(out) < 1000, out


# ---------------------------------------------------------------- fuzz

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
KEYS = st.sampled_from(["name", "model", "data", "train", "sweep", "eval", "resources", "storage", "variant",
                        "base", "kind", "n", "steps", "lr", "grid", "seeds", "suites", "options", "train.lr", "x"])
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)


def _yaml_of(value) -> str:
    import yaml

    return yaml.safe_dump(value, allow_unicode=True)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(doc=st.one_of(st.dictionaries(KEYS, VALUES, max_size=6),
                     st.builds(lambda base, k, v: {**base, k: v}, st.just({"name": "ok", "model": {"variant": "sd",
                               "base": "tiny-random"}, "data": {"train": {"kind": "shapes", "n": 8}}}), KEYS, VALUES)),
       raw=st.one_of(st.none(), st.text(max_size=80)))
def test_fuzzed_manifests_are_valid_or_refused_cleanly(tmp_path, doc, raw):
    """Any structure the schema might see, and any text at all: a loaded manifest or a
    ManifestError listing issues — never another exception, never a hang."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(_yaml_of(doc) if raw is None else raw)
    started = time.perf_counter()
    try:
        load_checked_manifest(path)
    except ManifestError as exc:
        assert exc.issues and all(i.message for i in exc.issues)
    assert time.perf_counter() - started < 2


# ---------------------------------------------------------------- nesting bounded while parsing

def _block_mapping(levels: int) -> str:
    return "name: x\n" + "".join(" " * i + "a:\n" for i in range(levels)) + " " * levels + "1\n"


# (name, text, the line named): PyYAML's composer recurses once per level, so each of these was a
# RecursionError (exit 1, a 500 from the head) before the depth check ever saw the tree.
DEEP = [
    ("flow sequence 1,000", "name: x\ndeep: " + "[" * 1000 + "]" * 1000 + "\n", 2),
    ("flow sequence 100,000", "name: x\ndeep: " + "[" * 100_000 + "]" * 100_000 + "\n", 2),
    ("flow mapping 100,000", "name: x\ndeep: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n", 2),
    ("unclosed flow 100,000", "name: x\ndeep: " + "[" * 100_000 + "\n", 2),
    ("block sequence 100,000", "name: x\ndeep:\n" + "- " * 100_000 + "1\n", 3),
    ("complex keys 100,000", "name: x\ndeep:\n" + "? " * 100_000 + "1\n", 3),
    # the root mapping is depth 0, so the key at depth 33 is the 33rd `a:`, on line 34
    ("block mapping 1,000", _block_mapping(1000), 34),
    ("anchored 100,000", "name: x\ndeep: " + "".join(f"&a{i} [" for i in range(100_000)) + "]" * 100_000 + "\n", 2),
    # each line nests the one before through an alias: 2 levels as written, 1,000 expanded
    ("alias chain 1,000", "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 1000)), None),
]


@pytest.mark.parametrize("name, text, line", DEEP, ids=[c[0] for c in DEEP])
def test_nesting_of_any_depth_is_refused_with_its_line_in_under_a_second(tmp_path, name, text, line):
    path = _write(tmp_path, name, text)
    started = time.perf_counter()
    with pytest.raises(ManifestError) as err:
        load_checked_manifest(path)
    assert time.perf_counter() - started < 1, name
    (issue,) = err.value.issues
    assert issue.message == "nested deeper than 32 levels" and issue.file.endswith(path.name), str(issue)
    if line is not None:
        assert issue.line == line, str(issue)
    else:  # somewhere in the chain, past the 32 lines the first levels take
        assert issue.line is not None and 32 < issue.line <= 1000, str(issue)


def test_nesting_at_the_limit_is_read(tmp_path):
    """32 levels is allowed, 33 is not: the bound is the README's, not an off-by-one."""
    path = _write(tmp_path, "at-limit", GOOD + "description: " + "[" * 31 + "'x'" + "]" * 31 + "\n")
    with pytest.raises(ManifestError) as err:  # a list is no description, but it was parsed
        load_checked_manifest(path)
    assert all("nested deeper" not in i.message for i in err.value.issues), err.value.issues
    assert any(i.path == "description" for i in err.value.issues), err.value.issues
    path.write_text(GOOD + "description: " + "[" * 32 + "'x'" + "]" * 32 + "\n")
    with pytest.raises(ManifestError, match=r":5: nested deeper than 32 levels"):
        load_checked_manifest(path)


def test_cli_refuses_deep_nesting_with_exit_2_its_line_and_no_traceback(tmp_path):
    def validate(path: Path) -> tuple[subprocess.CompletedProcess, float]:
        started = time.perf_counter()
        r = subprocess.run([ORCH, "validate", str(path)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return r, time.perf_counter() - started

    good = _write(tmp_path, "good", GOOD)
    baseline = min(validate(good)[1] for _ in range(2))  # the CLI's own start-up on this machine
    for name, text, line in (DEEP[0], DEEP[1], DEEP[4]):
        path = _write(tmp_path, name, text)
        r, took = validate(path)
        assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, (name, r.stderr)
        assert f"{path}:{line}: nested deeper than 32 levels" in r.stderr + r.stdout, (name, r.stderr, r.stdout)
        assert took - baseline < 1, (name, took, baseline)


# ---------------------------------------------------------------- control characters, escaped or not

# (name, YAML lines after GOOD, the field named, the line, the character named)
CONTROL = [
    ("nul bell bidi escaped", 'description: "\\0\\x07\\u202e"\n', "description", 5, "U+0000 (a control character)"),
    ("escape sequence", 'description: "ok \\e[2J"\n', "description", 5, "U+001B (a control character)"),
    ("carriage return", 'description: "a\\rb"\n', "description", 5, "U+000D (a control character)"),
    ("C1 next line", 'description: "a\\Nb"\n', "description", 5, "U+0085 (a control character)"),
    ("bidi override escaped", 'description: "\\u202eabc"\n', "description", 5, "U+202E (a bidi control character)"),
    ("bidi isolate raw", "description: abc\u2066def\n", "description", 5, "U+2066 (a bidi control character)"),
    ("lone surrogate", 'description: "\\ud800"\n', "description", 5, "U+D800 (a lone surrogate)"),
    ("in a list", 'eval:\n  suites: [ok, "\\x07"]\n', "eval.suites.1", 6, "U+0007 (a control character)"),
    ("in a sweep", 'sweep:\n  grid:\n    train.lr: [1.0e-4]\n    "data.train.n\\x1b": [1]\n',
     "sweep.grid.data.train.n\\u001b", 8, "key: U+001B (a control character)"),
    ("single-quoted raw bidi", "description: 'a\u202bb'\n", "description", 5, "U+202B (a bidi control character)"),
]


@pytest.mark.parametrize("name, extra, field, line, fragment", CONTROL, ids=[c[0] for c in CONTROL])
def test_control_and_bidi_characters_are_refused_after_unescaping(tmp_path, name, extra, field, line, fragment):
    path = _write(tmp_path, name, GOOD + extra)
    with pytest.raises(ManifestError) as err:
        load_checked_manifest(path)
    (issue,) = err.value.issues
    assert (issue.path, issue.line) == (field, line) and fragment in issue.message, str(issue)
    # the message names the character by code point and never carries it
    assert not any(0xD800 <= ord(c) <= 0xDFFF or c in "\x00\x07\x1b\r\x85\u202e\u2066\u202b" for c in str(issue))


def test_an_aliased_control_character_is_reported_once(tmp_path):
    path = _write(tmp_path, "aliased", GOOD + 'x: &bad "\\x07"\ny: [*bad, *bad, *bad]\n')
    with pytest.raises(ManifestError) as err:
        load_checked_manifest(path)
    assert [(i.path, i.line) for i in err.value.issues] == [("x", 5)], err.value.issues


def test_tabs_and_newlines_in_text_are_still_fine(tmp_path):
    path = _write(tmp_path, "text", GOOD + "description: |\n  first\tline\n  second line\n")
    assert load_checked_manifest(path).manifest.description == "first\tline\nsecond line\n"
    path.write_text(GOOD + 'description: "a\\tb\\nc"\n')
    assert load_checked_manifest(path).manifest.description == "a\tb\nc"
    path.write_text(GOOD.replace("\n", "\r\n") + "description: >\r\n  folded\r\n  text\r\n")  # CRLF file
    assert load_checked_manifest(path).manifest.description == "folded text\n"


def test_cli_refuses_an_escaped_control_character_with_field_and_line(tmp_path):
    path = _write(tmp_path, "ctrl", GOOD + 'description: "\\0\\x07\\u202e"\n')
    r = subprocess.run([ORCH, "validate", str(path)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = r.stderr + r.stdout
    assert r.returncode == 2 and "Traceback" not in out, out
    assert f"{path}:5: description: U+0000 (a control character) is not allowed" in out, out
    assert "\x07" not in out and "\u202e" not in out
