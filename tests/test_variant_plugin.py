"""A variant with its own options section, written here, plugs in through `registry.register`
alone — no file outside this test changes — and does what a variant of the tree does: its
`model.<variant>` section validates (an unknown option is refused with its line), it trains,
checkpoints, resumes bit for bit, exports, loads with no manifest, evaluates, and its path option
is confined by the head like every location of a manifest.

The variant, `carded_sd`, is Stable Diffusion by composition: SD's spec's functions do the work.
Its own options: `caption_dropout` (handed to SD's objective) and `card`, a path — a Markdown
model card copied into every export.

Confinement: a real `orch serve` runs in its own process, which cannot see a variant registered
in this one. So the test drives what the server's POST /v1/experiments calls,
`api.submissions.Submissions.submit`, in this process, and the same confined load the head plans
with (`load_experiment(..., roots=...)`, written out by `api.confine.confined_yaml`);
tests/test_api_confine.py covers the HTTP layer around them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
import torch
from pydantic import Field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.manifest import ManifestError, load_experiment, local_path
from orchestrator.models import registry
from orchestrator.models.loading import load_model
from orchestrator.models.spec import PathOption, VariantOptions, VariantSpec
from orchestrator.storage import open_store

SD = registry.get_variant("sd")
NAME = "carded_sd"
CARD = "# carded_sd\n\nA tiny SD with a model card.\n"


class CardedOptions(VariantOptions):
    """`model.carded_sd`."""
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0   # SD's, handed to its objective
    card: Annotated[str | None, PathOption("model card")] = None  # Markdown copied into every export


@dataclass
class Carded:
    sd: Any             # SD's components
    card: str | None    # the model card's text


def load_base(spec, store, base_dir):
    card = spec.options.card
    return Carded(SD.load_base(spec.with_variant("sd"), store, base_dir),
                  local_path(card, base_dir).read_text() if card else None)


def objective(m: Carded, data, spec, options: CardedOptions, *, store, device, use_cache=True):
    sd_options = SD.options(caption_dropout=options.caption_dropout)
    return SD.objective(m.sd, data, spec, sd_options, store=store, device=device, use_cache=use_cache,
                        cache_prefix=f"cache/{NAME}")


def export(m: Carded, out_dir: Path) -> None:
    SD.export(m.sd, out_dir)
    if m.card is not None:
        (out_dir / "README.md").write_text(m.card)
    index = json.loads((out_dir / "model_index.json").read_text())
    (out_dir / "model_index.json").write_text(json.dumps({**index, registry.INDEX_KEY: NAME}))


def load(path: Path) -> Carded:
    card = path / "README.md"
    return Carded(SD.load(path), card.read_text() if card.exists() else None)


CARDED = VariantSpec(
    name=NAME, kind="generator", trains_on=("shapes",), suites=("spatial",),
    load_base=load_base, modules=lambda m: SD.modules(m.sd), objective=objective, export=export, load=load,
    resolution=lambda m: SD.resolution(m.sd), generate=lambda m, prompts, **kw: SD.generate(m.sd, prompts, **kw),
    options=CardedOptions,
)


@pytest.fixture
def carded():
    registry.register(CARDED)
    yield CARDED
    registry.unregister(NAME)


MANIFEST = """\
name: carded
model:
  variant: carded_sd
  carded_sd: {{caption_dropout: 0.1, card: {card}}}
  base: tiny-random
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 4, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, ema_decay: 0.9, seed: 2}}
eval: {{suites: [spatial]}}
storage: {{blobs: ./{blobs}}}
"""


def write(tmp_path: Path, name: str, card: str = "./card.md") -> Path:
    (tmp_path / "card.md").write_text(CARD)
    path = tmp_path / f"{name}.yaml"
    path.write_text(MANIFEST.format(card=card, blobs=f"{name}-blobs"))
    return path


def issues_of(path: Path, **kwargs) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(ManifestError) as err:
        load_experiment(path, **kwargs)
    return {i.path: (i.line, i.message) for i in err.value.issues}


def test_the_registry_refuses_duplicate_and_unknown_names(carded):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(CARDED)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(VariantSpec(**{**CARDED.__dict__, "name": "sd"}))
    with pytest.raises(registry.UnknownVariant, match="unknown model variant 'nosuch'"):
        registry.get_variant("nosuch")
    for taken in ("base", "options", "copy"):  # the model section's own field, property, pydantic's method
        with pytest.raises(ValueError, match="taken by the model section itself"):
            VariantSpec(**{**CARDED.__dict__, "name": taken})


def test_its_section_validates_and_refuses_what_it_does_not_know(carded, tmp_path):
    assert carded.path_options == {"card": "model card"}
    loaded = load_experiment(write(tmp_path, "ok"))
    options = loaded.manifest.model.options
    assert isinstance(options, CardedOptions) and (options.caption_dropout, options.card) == (0.1, "./card.md")
    assert loaded.manifest.model.model_dump()[NAME] == {"caption_dropout": 0.1, "card": "./card.md"}

    path = write(tmp_path, "typo")
    path.write_text(path.read_text().replace("card: ./card.md", "cardd: ./card.md"))
    assert issues_of(path) == {f"model.{NAME}.cardd": (4, "unknown key 'cardd' (allowed: caption_dropout, card)")}

    (line, message) = issues_of(write(tmp_path, "missing", card="./nope.md"))[f"model.{NAME}.card"]
    assert line == 4 and message.startswith("model card not found:")

    path = write(tmp_path, "sd")  # another variant's section is refused, as for the tree's own
    path.write_text(path.read_text().replace("variant: carded_sd", "variant: sd"))
    assert "holds options of variant 'carded_sd', but model.variant is 'sd'" in issues_of(path)["model"][1]


def test_it_trains_resumes_bit_for_bit_exports_and_evaluates(carded, tmp_path):
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.training import train_trial

    torch.set_num_threads(1)
    first = train_trial(write(tmp_path, "split"), "0", max_steps=2)
    assert (first.step, first.model_prefix) == (2, None)
    resumed = train_trial(tmp_path / "split.yaml", "0")
    straight = train_trial(write(tmp_path, "straight"), "0")
    assert resumed.resumed_from == 2 and resumed.steps_run == 2 and resumed.final_loss == straight.final_loss

    split_store, straight_store = open_store(tmp_path / "split-blobs"), open_store(tmp_path / "straight-blobs")
    a = load_model(resumed.model_prefix, store=split_store)  # the export names its variant: no manifest
    b = load_model(straight.model_prefix, store=straight_store)
    assert a.variant is carded and a.resolution == 32 and a.model.card == CARD
    params = lambda loaded: [p for m in loaded.variant.modules(loaded.model).values() for p in m.parameters()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    # a checkpoint loads to the same weights as the export (EMA applied), with no manifest either
    ckpt = load_model("trials/" + resumed.checkpoint.split("trials/")[1], store=split_store)
    assert ckpt.step == 4 and ckpt.variant is carded
    assert all(torch.equal(x, y) for x, y in zip(params(ckpt), params(a)))

    ctx = build_context(None, model=a, samples=4, device="cpu")
    (result,) = run_in_context(ctx, ["spatial"])
    assert result.suite == "spatial" and result.metrics[0].n == 4 and ctx.generated().shape == (4, 3, 32, 32)


def test_its_path_option_is_confined_by_the_head(carded, tmp_path):
    from orchestrator.api.confine import confined_yaml
    from orchestrator.api.submissions import Submissions
    from orchestrator.journal import open_journal
    from orchestrator.manifest import expand

    state, data, outside = tmp_path / "state", tmp_path / "data", tmp_path / "outside"
    for d in (state, data, outside):
        d.mkdir()
    (outside / "card.md").write_text(CARD)
    (data / "card.md").write_text(CARD)
    (data / "link-out").symlink_to(outside)
    journal = open_journal(f"sqlite:///{state}/journal.db")
    head = Submissions(state, [data], journal, f"sqlite:///{state}/journal.db", ray_address="127.0.0.1:1")
    field = f"model.{NAME}.card"
    for probe in (str(outside / "card.md"), f"file://{outside}/card.md", f"{data}/../outside/card.md",
                  f"{data}/link-out/card.md", "s3://bucket/card.md"):
        body = MANIFEST.format(card=probe, blobs="blobs").encode()
        with pytest.raises(ManifestError) as err:
            head.submit(body)
        hits = [i for i in err.value.issues if i.path == field]
        assert hits and hits[0].line == 4, (probe, err.value.issues)
        assert "outside the head's allowed roots" in hits[0].message or "scheme" in hits[0].message, hits[0]
    assert journal.list_experiments() == []  # refused before anything was journaled

    # Inside the roots: what the workers receive is the resolved path, as for every location.
    path = state / "inside.yaml"
    path.write_text(MANIFEST.format(card=f"{data}/./card.md", blobs="blobs"))
    loaded = load_experiment(path, check_files=False, roots=head.roots)
    assert loaded.manifest.model.options.card == str((data / "card.md").resolve())
    assert f"card: {(data / 'card.md').resolve()}" in confined_yaml(loaded, expand(loaded, check_files=False))
