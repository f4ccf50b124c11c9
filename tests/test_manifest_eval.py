"""The manifest's eval section: what each suite needs is checked when the manifest loads (with the
line), and the Evaluator actor maps the section to the suites' options."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import orchestrator.models  # noqa: F401  (the variant catalog: `model.<variant>` sections validate)
from orchestrator.actors.evaluator import eval_options
from orchestrator.manifest import ManifestError, load_manifest

BASE = """\
name: unit
model: {variant: sd, resolution: 32}
data:
  train: {kind: shapes, captions: generic, n: 100}
  eval: {kind: shapes-winoground, n: 20, seed: 7}
eval:
"""


def write(tmp_path: Path, eval_lines: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(BASE + textwrap.indent(textwrap.dedent(eval_lines), "  "))
    return p


def issues_of(path: Path) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return {i.path: (i.line, i.message) for i in info.value.issues}


def test_each_suite_names_what_it_is_missing(tmp_path):
    found = issues_of(write(tmp_path, "suites: [spatial, fid, clip_r_precision]\nsamples: 5\nbest_of: 2\n"))
    line, message = found["eval"]
    assert line == 6
    assert "suite fid needs eval.fid_weights" in message and "suite clip_r_precision needs eval.clip" in message
    assert "eval.samples must be at least 10" in message and "best_of 2 needs eval.clip" in message


def test_missing_files_are_errors(tmp_path):
    found = issues_of(write(tmp_path, "suites: [spatial]\nclip: ./no-clip\nfid_weights: gone.pth\n"))
    assert found["eval.clip"][0] == 8 and "CLIP directory not found" in found["eval.clip"][1]
    assert found["eval.fid_weights"][0] == 9 and "FID weights file not found" in found["eval.fid_weights"][1]


def test_eval_section_maps_to_suite_options_against_the_manifest_dir(tmp_path):
    (tmp_path / "clip").mkdir()
    (tmp_path / "inception.pth").write_bytes(b"x")
    path = write(tmp_path, "suites: [spatial, winoground, fid]\nsamples: 12\nbest_of: 3\nclip: clip\n"
                           "fid_weights: file://inception.pth\n")
    loaded = load_manifest(path)
    o = eval_options(loaded.manifest, loaded.base_dir)
    assert (o.samples, o.best_of, o.eval_seed, o.image_size) == (12, 3, 7, 32)  # held out: the eval data's seed
    assert o.clip == str(tmp_path / "clip") and o.fid_weights == str(tmp_path / "inception.pth")
    assert o.winoground is None and o.fid_reference is None
