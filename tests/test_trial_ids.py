"""Trial and experiment ids are content hashes of the canonical dump of a manifest, so they must
not move when the code changes: journals, blob prefixes and reports are keyed by them. Pinned here
for every manifest under examples/ (a change that moves one is a change in what the manifests
mean; if it is meant, the closing note lists old and new ids and journals resume from their
recorded plans)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.manifest import expand, experiment_id, load_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PINNED = {
    "discffusion-comvg.yaml": ("e3d626cbda9f8", ["tde8be4cdb0c7"]),
    "discffusion-shapes.yaml": ("ee39dab543b17", ["t09ddacee9e51", "te619c32e8af8", "t8362652eaf63"]),
    "glide-mini-spatial.yaml": ("eea37dbf250c8", ["tbbf900676415", "t29bcf33b3ead", "tb2e9c6354305",
                                                  "tcf5164dbdd49"]),
    "shapes-demo.yaml": ("e5abb0733e67d", ["tff2a64a4c97a", "te7276e3045c1", "tdc83f03272d5", "t8dbda5c7f35b"]),
    "vcdm-shapes.yaml": ("e5bee6ec3f380", ["t634c2ca00e41", "t532c16989c60"]),
}


def test_every_example_is_pinned():
    assert sorted(PINNED) == sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "bad-manifest.yaml")


@pytest.mark.parametrize("name", sorted(PINNED))
def test_example_ids_do_not_move(name):
    loaded = load_manifest(EXAMPLES / name, check_files=False)  # the weights and data of some live elsewhere
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
