"""Evidence for the claim of Lin & Srikanth, "Diffusion Models as Visual Reasoners", in miniature: finetuning on
spatial captions raises spatial accuracy, and finetuning as long on generic captions does not.

    python examples/evidence/spatial_finetune.py --out runs/evidence

1. Pretrain the tiny base on generic captions (`pretrain_base`) into a blob store under --out.
2. Write a manifest whose sweep grid is data.train.captions: [generic, spatial] (same images,
   same steps, same seed: the captions are the only difference) and train both trials with
   `train_trial`, as `orch train` would.
3. Generate one image per held-out spatial prompt (a shapes dataset with another seed) from the
   base and both finetuned models, with the same noise for every model, and score them with
   `orchestrator.eval.spatial` (GenEval's rule on the detector's boxes).
4. Write loss CSVs, figures (PIL), sample grids and results.json.

Every stage is reused when its output exists, so a rerun with other eval settings (guidance,
prompt count) only regenerates; a changed pretraining setting needs a fresh --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from orchestrator.data.shapes import make_example  # noqa: E402
from orchestrator.eval.spatial import heldout_spatial_prompts, mcnemar, score_spatial, wilson_interval  # noqa: E402
from orchestrator.manifest import expand, load_manifest  # noqa: E402
from orchestrator.models.common.images import to_pil  # noqa: E402
from orchestrator.models.sd import generate, load_components, save_grid  # noqa: E402
from orchestrator.report.figures import moving_average  # noqa: E402
from orchestrator.storage import open_store  # noqa: E402
from orchestrator.training import TINY_BASE_PREFIX, LoopConfig, RunControl, pretrain_base, train_trial  # noqa: E402

log = logging.getLogger("evidence")
TRAIN_SEED = 0        # the shapes dataset both pretraining and finetuning draw images from
CAPTIONS = ("generic", "spatial")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="working directory (blob store, manifest, results)")
    p.add_argument("--pretrain-steps", type=int, default=4000, help="denoiser steps of the base")
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--pretrain-lr", type=float, default=5e-4)
    p.add_argument("--n-train", type=int, default=2000, help="shapes examples to train on")
    p.add_argument("--finetune-steps", type=int, default=1500)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-prompts", type=int, default=400, help="held-out spatial prompts")
    p.add_argument("--eval-seed", type=int, default=1000, help="shapes seed of the held-out prompts")
    p.add_argument("--guidance", type=float, nargs="+", default=[3.0],
                   help="CFG scales to evaluate; the first is the headline")
    p.add_argument("--sample-steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--finetune-only", choices=CAPTIONS,
                   help="train just this trial and stop, so two processes can train the trials in parallel; "
                        "a later run without it reuses both")
    return p.parse_args(argv)


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def tail_mean(rows: list[dict], k: int = 100) -> float:
    """Mean loss of the last k steps: the single-step loss is too noisy to compare runs by."""
    last = [r["loss"] for r in rows[-k:]]
    return sum(last) / len(last)


def pretrain(args, out: Path, store) -> dict:
    settings = {"steps": args.pretrain_steps, "vae_steps": args.vae_steps, "lr": args.pretrain_lr,
                "n": args.n_train, "batch_size": args.batch_size, "seed": TRAIN_SEED, "captions": "generic"}
    info_path = out / "pretrain.json"
    if store.exists(f"{TINY_BASE_PREFIX}/model_index.json") and info_path.exists():
        info = json.loads(info_path.read_text())
        if info["settings"] != settings:
            raise SystemExit(f"{out} holds a base pretrained with {info['settings']}; use a fresh --out")
        log.info("reusing the pretrained base in %s", out / "blobs")
        return info
    rows: list[dict] = []
    t0 = time.perf_counter()
    pretrain_base(TINY_BASE_PREFIX, out / "data" / "train", steps=args.pretrain_steps, seed=TRAIN_SEED,
                  n=args.n_train, vae_steps=args.vae_steps, batch_size=args.batch_size, lr=args.pretrain_lr,
                  store=store, on_metrics=lambda m: rows.append({"step": m["step"], "loss": m["loss"]}))
    wall = time.perf_counter() - t0
    write_csv(out / "pretrain_loss.csv", rows)
    info = {"settings": settings, "wall_s": round(wall, 1), "final_loss": rows[-1]["loss"],
            "final_loss_mean100": tail_mean(rows)}
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    return info


def write_manifest(args, out: Path) -> Path:
    # JSON is YAML, so the manifest loader reads this file as it reads a hand-written one.
    manifest = {
        "name": "spatial-finetune-evidence",
        "description": "Tiny base finetuned on generic vs spatial captions of the same images.",
        "model": {"variant": "sd", "base": None, "resolution": 32},
        "data": {"train": {"kind": "shapes", "captions": "generic", "n": args.n_train, "size": 32,
                           "seed": TRAIN_SEED}},
        "train": {"steps": args.finetune_steps, "batch_size": args.batch_size, "lr": args.finetune_lr,
                  "warmup_steps": min(50, args.finetune_steps - 1), "checkpoint_every": args.finetune_steps,
                  "seed": 0},
        "sweep": {"grid": {"data.train.captions": list(CAPTIONS)}},
        "resources": {"gpus_per_trial": 0, "cpus_per_trial": 1},
        "storage": {"blobs": "file://./blobs", "journal": "sqlite:///./journal.db"},
    }
    path = out / "spatial-finetune.yaml"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def finetune(args, out: Path, manifest: Path, store) -> dict[str, dict]:
    trials = {t.manifest.data.train.captions: t.id for t in expand(load_manifest(manifest))}
    infos = {}
    for caps in [args.finetune_only] if args.finetune_only else CAPTIONS:
        tid = trials[caps]
        info_path, csv_path = out / f"finetune_{caps}.json", out / f"finetune_{caps}_loss.csv"
        if info_path.exists() and json.loads(info_path.read_text())["trial"] == tid \
                and store.exists(f"trials/{tid}/model/model_index.json"):
            log.info("reusing finetuned trial %s (%s captions)", tid, caps)
            infos[caps] = json.loads(info_path.read_text())
            continue
        rows: list[dict] = []
        # train_trial calls on_metrics before it returns, so the lambda always sees this iteration's rows
        res = train_trial(manifest, tid, config=LoopConfig(num_threads=args.threads),
                          control=RunControl(
                              on_metrics=lambda m: rows.append({"step": m.step, "loss": m.loss})))  # noqa: B023
        if res.steps_run != res.total_steps:
            raise SystemExit(f"trial {tid} resumed from step {res.resumed_from}; its loss curve is incomplete, "
                             f"delete {out / 'blobs' / 'trials' / tid} and rerun")
        write_csv(csv_path, rows)
        infos[caps] = {"trial": tid, "model": res.model_prefix, "wall_s": round(res.wall_s, 1),
                       "it_per_s": round(res.it_per_s, 2), "final_loss": res.final_loss,
                       "final_loss_mean100": tail_mean(rows)}
        info_path.write_text(json.dumps(infos[caps], indent=1) + "\n")
    return infos


def evaluate(args, out: Path, store, models: dict[str, str]) -> dict:
    prompts = heldout_spatial_prompts(args.eval_seed, args.eval_prompts)
    texts = [p.text for p in prompts]
    # Ceiling of the metric: the held-out scenes themselves, rendered (detector + rule on ground truth).
    truth = [make_example(args.eval_seed, i).image() for i in range(args.eval_prompts * 3)
             if make_example(args.eval_seed, i).spatial_fact is not None][:len(prompts)]
    # The scenes are new, but a short caption can repeat a training caption word for word; the
    # prompts whose text the spatial trial never saw are scored apart as well.
    seen = {make_example(TRAIN_SEED, i).spatial for i in range(args.n_train)}
    novel = [i for i, t in enumerate(texts) if t not in seen]
    results: dict = {"n_prompts": len(prompts), "n_novel_text": len(novel), "eval_seed": args.eval_seed,
                     "sampler": "ddim", "sample_steps": args.sample_steps,
                     "ground_truth": score_spatial(truth, prompts).to_json(), "by_guidance": {}}
    loaded = {name: load_components(prefix, store=store) for name, prefix in models.items()}
    for gs in args.guidance:
        scores, t0 = {}, time.perf_counter()
        for name, c in loaded.items():
            g = torch.Generator().manual_seed(1234)  # the same noise for every model: a paired comparison
            images = generate(c, texts, sampler="ddim", steps=args.sample_steps, guidance_scale=gs,
                              generator=g, batch_size=100)
            scores[name] = score_spatial(to_pil(images), prompts)
            save_grid(images[:48], out / f"samples_{name}_cfg{gs:g}.png", cols=8)
            log.info("cfg %g %s: spatial %.3f object %.3f", gs, name, scores[name].accuracy,
                     scores[name].object_accuracy)
        results["by_guidance"][f"{gs:g}"] = {
            "scores": {k: v.to_json() for k, v in scores.items()},
            "novel_text_accuracy": {k: _subset(v.outcomes, novel) for k, v in scores.items()},
            "mcnemar_spatial_vs_generic": mcnemar(scores["spatial"].outcomes, scores["generic"].outcomes),
            "mcnemar_spatial_vs_base": mcnemar(scores["spatial"].outcomes, scores["base"].outcomes),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    (out / "prompts.txt").write_text("\n".join(texts) + "\n")
    return results


def _subset(outcomes, idx: list[int]) -> dict:
    k = sum(outcomes[i] for i in idx)
    return {"n": len(idx), "correct": k, "accuracy": k / len(idx) if idx else 0.0,
            "accuracy_ci": wilson_interval(k, len(idx))}


def _chart(path: Path, title: str, ylabel: str, draw) -> Path:
    """One matplotlib chart (what report/figures.py draws with), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    draw(ax)
    ax.set(title=title, ylabel=ylabel)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.14, top=0.88)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


def figures(out: Path, results: dict) -> list[str]:
    pre = read_csv(out / "pretrain_loss.csv")
    w = max(1, len(pre) // 60)

    def pretrain_curve(ax):
        ax.plot([r["step"] for r in pre], moving_average([r["loss"] for r in pre], w),
                label=f"denoiser loss (moving mean of {w})")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)

    paths = [_chart(out / "pretrain_loss.png", "Tiny base: pretraining on generic captions",
                    "noise-prediction MSE", pretrain_curve)]
    curves = {c: read_csv(out / f"finetune_{c}_loss.csv") for c in CAPTIONS}
    w_ft = max(1, len(curves["generic"]) // 30)

    def finetune_curves(ax):
        for c, rows in curves.items():
            ax.plot([r["step"] for r in rows], moving_average([r["loss"] for r in rows], w_ft), label=f"{c} captions")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)

    paths.append(_chart(out / "finetune_loss.png", f"Finetuning from the base (moving mean of {w_ft})",
                        "noise-prediction MSE", finetune_curves))
    gs = next(iter(results["eval"]["by_guidance"]))
    sc = results["eval"]["by_guidance"][gs]["scores"]
    names = ["base", "generic", "spatial"]
    truth = results["eval"]["ground_truth"]["accuracy"]

    def accuracy_bars(ax):
        acc = [sc[n]["accuracy"] for n in names]
        low = [a - sc[n]["accuracy_ci"][0] for a, n in zip(acc, names)]
        high = [sc[n]["accuracy_ci"][1] - a for a, n in zip(acc, names)]
        ax.bar([f"{n}-finetuned" if n != "base" else n for n in names], acc, yerr=[low, high], capsize=4)
        ax.axhline(truth, color="grey", ls="--", label=f"rendered ground truth: {truth:.2f}")
        ax.legend(fontsize=8)

    paths.append(_chart(out / "spatial_accuracy.png",
                        f"Spatial accuracy, {results['eval']['n_prompts']} held-out prompts (CFG {gs})",
                        "GenEval position accuracy (95% Wilson CI)", accuracy_bars))
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(str(out / "blobs"))
    t0 = time.perf_counter()
    pre = pretrain(args, out, store)
    manifest = write_manifest(args, out)
    fin = finetune(args, out, manifest, store)
    if args.finetune_only:
        return 0
    models = {"base": TINY_BASE_PREFIX, **{c: fin[c]["model"] for c in CAPTIONS}}
    ev = evaluate(args, out, store, models)
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "pretrain": pre, "finetune": fin, "eval": ev,
               "wall_s_this_run": round(time.perf_counter() - t0, 1)}
    results["figures"] = figures(out, results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    head = ev["by_guidance"][f"{args.guidance[0]:g}"]
    for name, s in head["scores"].items():
        print(f"{name:8s} spatial {s['accuracy']:.3f} [{s['accuracy_ci'][0]:.3f}, {s['accuracy_ci'][1]:.3f}]"
              f"  object {s['object_accuracy']:.3f}  conditional {s['conditional_accuracy']:.3f}"
              f"  axis {s['axis_accuracy']:.3f}  displacement {s['displacement']:+.3f}"
              f" [{s['displacement_ci'][0]:+.3f}, {s['displacement_ci'][1]:+.3f}]"
              f"  (n={s['n']})")
    print("spatial vs generic (McNemar):", head["mcnemar_spatial_vs_generic"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
