"""Discffusion on the shapes world's Winoground pairs: pooling ablation and baselines, measured.

Scores every pair of the held-out shapes scenes (eval seed 1000) with the tiny SD base (default:
the shipped assets/demo-base) under each configuration, and prints Winoground text / image / group
with 95% Wilson intervals and McNemar's exact test of each configuration's per-example group and
text outcomes against the paper's LogSumExp (same examples, same noise: paired).

    .venv/bin/python scripts/discffusion_shapes.py [--base assets/demo-base] [--scenes 500]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from orchestrator.data.loaders.winoground import shapes_pairs
from orchestrator.eval.spatial import mcnemar, wilson_interval
from orchestrator.eval.winoground import outcomes, score_examples
from orchestrator.manifest.schema import DiscffusionOptions
from orchestrator.models.discffusion.score import DiffusionScorer
from orchestrator.models.sd import load_components

CONFIGS = {  # name: (method, options)
    "lse (paper)": ("discffusion", {}),
    "max_row": ("discffusion", {"pooling": "max_row"}),
    "max_col": ("discffusion", {"pooling": "max_col"}),
    "cosine": ("discffusion", {"pooling": "cosine"}),
    "lse, batch mean (code)": ("discffusion", {"reduce": "batch"}),
    "lse, logits, all tokens, 3 layers (code)": ("discffusion", {"attention": "logits", "tokens": "all",
                                                                 "layers": "last_down_mid_up"}),
    "diffusion classifier": ("diffusion_classifier", {}),
    "diffusion ITM": ("diffusion_itm", {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="assets/demo-base")
    ap.add_argument("--scenes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1000, help="shapes scenes' seed (held out from training)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    examples = shapes_pairs(args.scenes, args.seed, 32)
    print(f"{len(examples)} shapes Winoground pairs from {args.scenes} scenes (seed {args.seed}); base {args.base}")
    passed = {}
    for name, (method, opts) in CONFIGS.items():
        t0 = time.perf_counter()
        scorer = DiffusionScorer(load_components(args.base), DiscffusionOptions(**opts), method=method)
        passed[name] = outcomes(score_examples(examples, scorer))
        cells = []
        for key in ("text", "image", "group"):
            k, n = int(passed[name][key].sum()), len(examples)
            lo, hi = wilson_interval(k, n)
            cells.append(f"{key} {k / n:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"{name:42s} {'  '.join(cells)}  ({time.perf_counter() - t0:.0f} s)")
    ref = passed["lse (paper)"]
    print("McNemar vs lse (paper), exact two-sided p:")
    for name, p in passed.items():
        if name != "lse (paper)":
            g, t = mcnemar(p["group"], ref["group"]), mcnemar(p["text"], ref["text"])
            print(f"  {name:42s} group p={g['p_value']:.3g}  text p={t['p_value']:.3g}")
    print("chance: text 0.25, image 0.25, group 0.167")


if __name__ == "__main__":
    main()
