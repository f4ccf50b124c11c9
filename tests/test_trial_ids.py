"""Trial and experiment ids are content hashes of the canonical dump of a manifest, so they must
not move when the code changes: journals, blob prefixes and reports are keyed by them. Pinned here
for every manifest under examples/ (examples/<name>/manifest.yaml; a change that moves one is a
change in what the manifests mean; if it is meant, the closing note lists old and new ids and
journals resume from their recorded plans)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.manifest import expand, experiment_id, load_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PINNED = {  # keyed by the example's folder: examples/<name>/manifest.yaml
    "discffusion-comvg": ("e9d9ced9c5d4a", ["t58ea78aa4a25"]),
    "discffusion-shapes": ("e4934663c964a", ["t3465c9d97e40", "te6c45132005c", "t605bef7b1dbe"]),
    "glide-mini-spatial": ("ebb185a691f7a", ["tf2b86ef90d01", "t97ccfbe9e0f4", "tb2e9c6354305", "tcf5164dbdd49"]),
    "shapes-demo": ("e860dff16eac5", ["t41f252475e79", "t438d471319be", "t5eaf6628c7fe", "tce02cf086e68"]),
    "vcdm-shapes": ("e13c6906dda5d", ["t3849e5242379", "t448237b20528"]),
}


def test_every_example_is_pinned():
    assert sorted(PINNED) == sorted(p.parent.name for p in EXAMPLES.glob("*/manifest.yaml")
                                    if p.parent.name != "bad-manifest")


@pytest.mark.parametrize("name", sorted(PINNED))
def test_example_ids_do_not_move(name):
    # check_files=False: the weights and data of some live elsewhere
    loaded = load_manifest(EXAMPLES / name / "manifest.yaml", check_files=False)
    trials = expand(loaded, check_files=False)
    assert (experiment_id(loaded, trials), [t.id for t in trials]) == (PINNED[name][0], PINNED[name][1])


def test_a_field_added_with_a_default_moves_no_id():
    """The one canonical rule (manifest/section.py Section): a field holding its default is left
    out of the dump, except the fields ids were first hashed with. So a section that gains a field
    dumps exactly as before until a manifest sets it."""
    from pydantic import create_model

    from orchestrator.manifest.schema import TrainSpec

    grown = create_model("TrainSpec", __base__=TrainSpec, new_knob=(int, 7))
    written = {"steps": 10, "lr": 1e-3}
    assert grown(**written).model_dump(mode="json") == TrainSpec(**written).model_dump(mode="json")
    assert grown(**written, new_knob=8).model_dump(mode="json") == {**TrainSpec(**written).model_dump(mode="json"),
                                                                    "new_knob": 8}
    # the fields that were always hashed stay in the dump at their defaults (their ids keep)
    assert TrainSpec().model_dump(mode="json")["grad_accum"] == 1
