"""The variant seam: a variant written here plugs in through the registry alone (trains,
checkpoints, resumes bit for bit, exports, loads with no manifest, evaluates), and the capability
table refuses at load time, with the line, what no variant could run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestrator.manifest import ManifestError, load_experiment
from orchestrator.models import registry
from orchestrator.models.loading import load_model
from orchestrator.models.registry import INDEX_KEY
from orchestrator.models.spec import VariantSpec
from orchestrator.storage import open_store


class ToyModel:
    """A pixel-space denoiser with no text: enough to exercise every part of the seam."""

    def __init__(self, resolution: int):
        self.res = resolution
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(8, 3, 3, padding=1))


class ToyObjective:
    def __init__(self, model: ToyModel, data):
        self.data, self.net = data, model.net
        self.modules = {"net": model.net}
        self.num_examples = len(data)

    def loss(self, batch):
        x = self.data.pixels(batch.indices)
        noise = batch.keep(torch.randn((batch.size, *x.shape[1:]), generator=batch.generator))
        with batch.autocast():
            return F.mse_loss(self.net(x + noise), x)


class ToyFunctions:
    """The variant's functions: a plain namespace, as a variant module is."""

    @staticmethod
    def load_base(spec, store, base_dir):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return ToyModel(spec.resolution)

    @staticmethod
    def modules(model):
        return {"net": model.net}

    @staticmethod
    def objective(model, data, spec, options, *, store, device, use_cache=True):
        return ToyObjective(model, data)

    @staticmethod
    def export(model, out_dir: Path):
        torch.save(model.net.state_dict(), out_dir / "net.pt")
        (out_dir / "model_index.json").write_text(json.dumps({INDEX_KEY: "toy", "resolution": model.res}))

    @staticmethod
    def load(path: Path):
        model = ToyModel(json.loads((path / "model_index.json").read_text())["resolution"])
        model.net.load_state_dict(torch.load(path / "net.pt", weights_only=True))
        return model

    @staticmethod
    def resolution(model):
        return model.res

    @staticmethod
    def generate(model, prompts, *, generator=None, **_sampling):
        with torch.no_grad():
            x = torch.rand((len(prompts), 3, model.res, model.res), generator=generator)
            return model.net(x).clamp(0, 1)


Toy = VariantSpec(name="toy", kind="generator", trains_on=("shapes",), suites=("spatial",),
                  load_base=ToyFunctions.load_base, modules=ToyFunctions.modules, objective=ToyFunctions.objective,
                  export=ToyFunctions.export, load=ToyFunctions.load, resolution=ToyFunctions.resolution,
                  generate=ToyFunctions.generate)


@pytest.fixture
def toy():
    registry.register(Toy)
    yield Toy
    registry.unregister("toy")


MANIFEST = """\
name: toy
model: {{variant: toy, resolution: 32}}
data: {{train: {{kind: shapes, captions: spatial, n: 8}}}}
train: {{steps: 4, batch_size: 4, lr: 1.0e-2, checkpoint_every: 2, ema_decay: 0.9, seed: 2}}
eval: {{suites: [{suites}]}}
storage: {{blobs: {blobs}}}
"""


def write(tmp_path: Path, name: str, suites: str = "spatial", **fields: str) -> Path:
    text = MANIFEST.format(suites=suites, blobs=f"./{name}-blobs")
    for old, new in fields.items():
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_a_variant_written_here_trains_resumes_exports_and_evaluates(toy, tmp_path):
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.training import train_trial

    torch.set_num_threads(1)
    load_experiment(write(tmp_path, "split"))  # the capability table knows the plug-in
    first = train_trial(write(tmp_path, "split"), "0", max_steps=2)
    assert (first.step, first.model_prefix) == (2, None)
    resumed = train_trial(tmp_path / "split.yaml", "0")
    straight = train_trial(write(tmp_path, "straight"), "0")
    assert resumed.resumed_from == 2 and resumed.steps_run == 2 and resumed.final_loss == straight.final_loss

    split_store, straight_store = open_store(tmp_path / "split-blobs"), open_store(tmp_path / "straight-blobs")
    a = load_model(resumed.model_prefix, store=split_store)  # the export names its variant: no manifest
    b = load_model(straight.model_prefix, store=straight_store)
    assert a.variant is Toy and a.resolution == 32
    assert all(torch.equal(x, y) for x, y in zip(a.model.net.parameters(), b.model.net.parameters()))
    # a checkpoint loads to the same weights as the export (EMA applied), also with no manifest
    ckpt = load_model("trials/" + resumed.checkpoint.split("trials/")[1], store=split_store)
    assert ckpt.step == 4
    assert all(torch.equal(x, y) for x, y in zip(ckpt.model.net.parameters(), a.model.net.parameters()))

    ctx = build_context(None, model=a, samples=4, device="cpu")
    (result,) = run_in_context(ctx, ["spatial"])
    assert result.suite == "spatial" and result.metrics[0].n == 4 and ctx.generated().shape == (4, 3, 32, 32)


def issues_of(path: Path) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(ManifestError) as err:
        load_experiment(path)
    return {i.path: (i.line, i.message) for i in err.value.issues}


@pytest.fixture
def planned(monkeypatch):
    """A variant the registry lists as planned, not built (as vcdm was before issue 13's first step)."""
    monkeypatch.setitem(registry._VARIANTS, "planned", registry._Entry(None, "a planned chain (issue 99)", "chain"))


def test_capability_table_refuses_with_the_line(toy, planned, tmp_path):
    p = tmp_path / "suites.yaml"
    p.write_text(MANIFEST.format(suites="spatial, clip_r_precision", blobs="./b")
                 .replace("]}\nstorage", "], clip: .}\nstorage"))
    (line, message) = issues_of(p)["eval.suites.1"]
    assert line == 5 and "suite 'clip_r_precision' cannot run on variant 'toy' (generator)" in message

    p = tmp_path / "kinds.yaml"
    p.write_text(MANIFEST.format(suites="spatial", blobs="./b").replace("kind: shapes, captions: spatial, n: 8",
                                                                         "kind: winoground, root: ."))
    (line, message) = issues_of(p)["data.train.kind"]
    assert line == 3 and "cannot train on data kind 'winoground'" in message and "shapes" in message

    p.write_text(MANIFEST.format(suites="spatial", blobs="./b").replace("variant: toy", "variant: planned"))
    (line, message) = issues_of(p)["model.variant"]
    assert line == 2 and "not implemented yet" in message and "issue 99" in message

    p.write_text(MANIFEST.format(suites="spatial", blobs="./b").replace(
        "variant: toy", "variant: vcdm, vcdm: {conditioning: none}"))
    (line, message) = issues_of(p)["eval.suites.0"]
    assert line == 5 and "suite 'spatial' cannot run on variant 'vcdm' (chain)" in message

    p.write_text(MANIFEST.format(suites="spatial", blobs="./b").replace("variant: toy", "variant: nosuch"))
    assert "unknown model variant 'nosuch'" in issues_of(p)["model.variant"][1]


def test_swept_variant_points_at_the_sweep_entry(toy, planned, tmp_path):
    p = tmp_path / "swept.yaml"
    p.write_text(MANIFEST.format(suites="spatial", blobs="./b")
                 + "sweep:\n  grid:\n    model.variant: [toy, planned]\n")
    (line, message) = issues_of(p)["model.variant"]
    assert line == 9 and "planned" in message


def test_sd_serves_no_suite_it_cannot_and_options_are_checked(tmp_path):
    body = ("name: sd\nmodel:\n  variant: sd\n  sd: {prediction_type: v_prediction, train_txt_encoder: true}\n"
            "data: {train: {kind: comvg, root: .}}\n")
    p = tmp_path / "sd.yaml"
    p.write_text(body)
    with pytest.raises(ManifestError) as err:
        load_experiment(p)
    (issue,) = err.value.issues  # the schema error comes first; the table runs on a valid manifest
    assert (issue.path, issue.line) == ("model.sd.train_txt_encoder", 4) and "train_text_encoder" in issue.message
    p.write_text(body.replace("train_txt_encoder", "train_text_encoder"))
    found = issues_of(p)
    assert found["data.train.kind"][0] == 5 and "comvg" in found["data.train.kind"][1]
    p.write_text(body.replace("train_txt_encoder", "train_text_encoder").replace("variant: sd", "variant: toy"))
    with pytest.raises(ManifestError, match="model.sd holds options of variant 'sd'"):
        load_experiment(p)


def test_sd_prediction_type_option_retargets_the_schedule():
    from orchestrator.manifest.schema import ModelSpec
    from orchestrator.models.common.diffusion import training_target

    plain = load_model(None, spec=ModelSpec(variant="sd", base="tiny-random")).model
    v = load_model(None, spec=ModelSpec.model_validate(
        {"variant": "sd", "base": "tiny-random", "sd": {"prediction_type": "v_prediction"}})).model
    assert plain.scheduler.config.prediction_type == "epsilon" and v.scheduler.config.prediction_type == "v_prediction"
    latents, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    assert torch.equal(training_target(plain.scheduler, latents, noise, t), noise)
    assert not torch.equal(training_target(v.scheduler, latents, noise, t), noise)
