"""Can the tiny SD3 (MMDiT) learn where things go? A from-scratch run on truthful spatial captions,
judged at stages by the spatial suite's relation-given-both-objects (issue 30's gate before a
shipped sd3 base: >= 0.6 on 200 held-out prompts; chance 0.28).

    .venv/bin/python scripts/sd3_relations_probe.py --out runs/sd3-probe [--steps 6300] [--stages 3]

With `--base DIR` it finetunes that directory instead (e.g. the shipped web-caption base, to size
the demo: how many steps of spatial captions teach it relations), with `--captions`, `--lr`,
`--batch-size`, `--ema` and `--frozen-text` as the demo's trials set them.

What it does, all through the project (`model.variant: sd3`, the generic loop, the spatial suite):
1. a base directory: the tiny SD3 architecture (models/sd3 build_tiny: 4 MMDiT layers, 4 heads x
   16, two 2-layer CLIP text encoders, freshly initialised) over the shipped demo base's VAE
   (assets/demo-base/vae: 4 x 8 x 8 latents, whose round trip keeps the judge's accuracy at 1.00
   on held-out scenes), its flow-matching schedule unshifted (shift 1: an 8 x 8 latent is far below
   the resolutions SD3's shift 3 was chosen for);
2. a manifest: 20,000 "pairs"-world scenes with truthful spatial captions, the transformer and
   both text encoders trained (model.sd3.train_text_encoders), 10% caption dropout, AdamW lr 1e-3,
   300 warm-up steps, batch 64, EMA 0.999;
3. training in `--stages` equal legs (a resumed run is bit for bit the uninterrupted one), the EMA
   weights of each leg's checkpoint judged on `--samples` held-out prompts of the pairs world:
   flow-matching Euler, 30 steps, guidance 4, the same noise at every stage.
Prints one row per stage and writes results.json beside the run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import orchestrator.models  # noqa: E402,F401  (the variant catalog)

ROOT = Path(__file__).resolve().parents[1]


def build_base(out: Path, seed: int) -> Path:
    from diffusers import AutoencoderKL

    from orchestrator.models.sd3.components import build_tiny

    base = out / "base"
    if not (base / "model_index.json").exists():
        vae = AutoencoderKL.from_pretrained(ROOT / "assets" / "demo-base" / "vae")
        build_tiny(seed=seed, resolution=32, vae=vae, shift=1.0).save(base)
    return base


MANIFEST = """\
name: sd3-relations-probe
model:
  variant: sd3
  base: {base}
  resolution: 32
  sd3: {{train_text_encoders: {text}, caption_dropout: 0.1}}
data:
  train: {{kind: shapes, captions: {captions}, world: pairs, n: {n}, size: 32, seed: 0}}
train: {{steps: {steps}, batch_size: {batch}, lr: {lr}, weight_decay: 0.01, warmup_steps: {warmup}, grad_clip: 1.0,
        ema_decay: {ema}, checkpoint_every: {every}, seed: 0}}
storage:
  blobs: file://{blobs}
  journal: sqlite:///{journal}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "sd3-probe")
    ap.add_argument("--steps", type=int, default=6300)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000, help="training scenes")
    ap.add_argument("--samples", type=int, default=200, help="held-out prompts judged at each stage")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="the base's initialisation")
    ap.add_argument("--base", type=Path, help="finetune this sd3 directory instead of a fresh base "
                    "(e.g. assets/tiny-sd3-base: how fast does a finetune learn relations?)")
    ap.add_argument("--captions", default="spatial", help="training captions (spatial: truthful; generic; web)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the judged weights")
    ap.add_argument("--frozen-text", action="store_true", help="train the transformer only")
    args = ap.parse_args()

    from orchestrator.eval.suites import run_suites
    from orchestrator.manifest import expand, load_experiment
    from orchestrator.models.loading import load_model
    from orchestrator.storage import open_store
    from orchestrator.training import LoopConfig, RunControl, train_trial

    torch.set_num_threads(args.threads)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    base = args.base.absolute() if args.base else build_base(out, args.seed)
    leg = args.steps // args.stages
    manifest = out / "manifest.yaml"
    manifest.write_text(MANIFEST.format(base=base, n=args.n, steps=args.steps, every=leg, warmup=args.warmup,
                                        text=str(not args.frozen_text).lower(), captions=args.captions,
                                        batch=args.batch_size, lr=args.lr, ema=args.ema,
                                        blobs=out / "blobs", journal=out / "journal.db"))
    loaded = load_experiment(manifest)
    [trial] = expand(loaded)
    store = open_store(str(out / "blobs"))
    rows = []
    for stage in range(1, args.stages + 1):
        target = args.steps if stage == args.stages else stage * leg
        t0 = time.perf_counter()
        result = train_trial(manifest, trial.id, max_steps=target, control=RunControl(progress=False),
                             config=LoopConfig(num_threads=args.threads))
        train_s = time.perf_counter() - t0
        model = load_model(result.checkpoint, spec=trial.manifest.model, store=store)
        t0 = time.perf_counter()
        (res,) = run_suites(None, ["spatial"], model=model, samples=args.samples, world="pairs", steps=30,
                            guidance_scale=4.0, device="cpu")
        m = {v.name: v for v in res.metrics}
        row = {"step": result.step, "loss": result.final_loss, "train_s": round(train_s, 1),
               "eval_s": round(time.perf_counter() - t0, 1),
               **{k: {"value": v.value, "n": v.n, "ci": [v.ci_low, v.ci_high]} for k, v in m.items()}}
        rows.append(row)
        c = m["conditional_accuracy"]
        print(f"step {result.step:5d}  loss {result.final_loss:.4f}  object {m['object_accuracy'].value:.3f}  "
              f"spatial {m['accuracy'].value:.3f}  relation|both {c.value:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}] "
              f"(n={c.n})  train {train_s:.0f} s", flush=True)
        (out / "results.json").write_text(json.dumps({"trial": trial.id, "args": {k: str(v) for k, v in
                                                                                   vars(args).items()},
                                                      "stages": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
