"""Real data through the whole product: a directory in SD v1-5's exact layout (tiny random weights)
finetuned by the actors on an imagefolder dataset and on gqa-captions shards + GQA images, then
evaluated with CLIP-R-Precision by the tiny CLIP; each trial's export loads by itself."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from orchestrator import app as api  # noqa: E402
from orchestrator.data.gqa_captions import build_gqa_captions  # noqa: E402
from orchestrator.data.shapes import make_example  # noqa: E402
from orchestrator.experiment.plan import plan_sweep  # noqa: E402
from orchestrator.journal import open_journal  # noqa: E402
from orchestrator.models.loading import load_model  # noqa: E402
from orchestrator.storage import open_store  # noqa: E402
from tests.test_actors import cluster  # noqa: E402,F401  (one Ray for the session)
from tests.test_image_text import write_gqa  # noqa: E402
from tests.test_sd_layouts import make_sd_dir  # noqa: E402

MANIFEST = """\
name: real-data
model: {{variant: sd, base: ./sd-v1-5, resolution: 32}}
data:
  train: {{kind: imagefolder, root: ./folder}}
train: {{steps: 4, batch_size: 4, lr: 1.0e-3, checkpoint_every: 2, seed: 0}}
sweep:
  trials:
    - {{data.train.kind: imagefolder, data.train.root: ./folder}}
    - {{data.train.kind: gqa-captions, data.train.root: ./gqa-captions, data.train.options: {{images: ./gqa/images}}}}
resources: {{cpus_per_trial: 1}}
eval: {{suites: [clip_r_precision], samples: 10, clip: {clip}}}
storage: {{blobs: ./blobs, journal: sqlite:///./journal.db}}
"""


def write_imagefolder(root: Path, n: int = 8) -> None:
    """Shapes-world scenes saved as a user's folder would hold them: 48 px PNGs (cropped and
    resized to the model's 32 px on load) with a metadata.jsonl."""
    (root / "scenes").mkdir(parents=True)
    records = []
    for i in range(n):
        ex = make_example(3, i, 48)
        ex.image().save(root / "scenes" / f"{i}.png")
        records.append({"file_name": f"scenes/{i}.png", "text": ex.spatial})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_sd_v15_layout_finetuned_on_imagefolder_and_gqa_captions_through_the_actors(tmp_path):
    from PIL import Image

    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config, save_clip

    torch.manual_seed(0)
    make_sd_dir(tmp_path, "v1-5")
    write_imagefolder(tmp_path / "folder")
    sg, q = write_gqa(tmp_path)
    build_gqa_captions(sg, q, str(tmp_path / "gqa-captions"), examples_per_shard=4, progress=False)
    for i, img in enumerate(("2300000", "2300001", "2300002")):
        (tmp_path / "gqa" / "images").mkdir(parents=True, exist_ok=True)
        make_example(5, i, 40).image().convert("RGB").resize((50, 40), Image.BICUBIC).save(
            tmp_path / "gqa" / "images" / f"{img}.jpg")
    clip, tok = build_tiny_clip(seed=0)
    save_clip(ClipEncoder(clip, tok, Preprocess.from_config(preprocessor_config(32)), "tiny"), tmp_path / "clip")
    path = tmp_path / "real.yaml"
    path.write_text(MANIFEST.format(clip=tmp_path / "clip"))

    eid = api.run_experiment(path, progress=False)
    plan = plan_sweep(path)
    with open_journal(plan.journal_url) as journal:
        state = journal.experiment_state(eid)
        assert state.status.value == "done" and state.counts()["done"] == 2, \
            [t.last_error for t in state.trials.values()]
        for trial in state.trials.values():
            final = trial.metrics[4]
            assert 0.0 <= final["clip_r_precision.r_at_1"] <= 1.0 and final["clip_r_precision.r_at_1.n"] == 10
            assert "clip_r_precision.r_at_1.std" in final and 0 in trial.metrics  # the base was judged too
    store = open_store(plan.blobs_uri)
    for tid in state.trials:
        model = load_model(f"trials/{tid}/model", store=store)  # the export names its variant
        assert model.variant.INFO.name == "sd" and model.resolution == 32
        assert type(model.model.tokenizer).__name__ == "CLIPTokenizer"  # the v1-5 directory's own tokenizer
    # both trials' data was encoded once each and cached by content (a rerun would hit)
    assert len([k for k in store.list("cache/sd/latents/")]) == 2


def test_a_data_parallel_trial_on_files_shards_the_examples_there_are(tmp_path):
    """The ShardPlanner's size is the count the ranks will read: a file source's `n` is at most
    its first n, and a skipped record is not there."""
    from orchestrator.actors.trainer import planner_spec
    from orchestrator.experiment.plan import plan_sweep

    write_imagefolder(tmp_path / "folder", n=6)
    with (tmp_path / "folder" / "metadata.jsonl").open("a") as f:
        f.write(json.dumps({"file_name": "scenes/missing.png", "text": "gone"}) + "\n")
    path = tmp_path / "ddp.yaml"
    path.write_text("name: ddp\nmodel: {variant: sd, base: tiny-random}\n"
                    "data: {train: {kind: imagefolder, root: ./folder, n: 100, on_error: skip}}\n"
                    "train: {steps: 2, batch_size: 2}\nstorage: {blobs: ./blobs}\n")
    plan = plan_sweep(path)
    assert planner_spec(plan.trial(plan.trials[0].id).to_json())["n"] == 6
