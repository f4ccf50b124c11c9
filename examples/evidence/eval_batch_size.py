"""Does the generation batch move the images the suites judge? The demo base's 64 held-out
prompts, sampled as the Evaluator does (the eval section's defaults: DDIM, 25 steps, guidance 3,
seed 1234), at two batch sizes; prints how far the images differ.

    .venv/bin/python examples/evidence/eval_batch_size.py                 # 64 vs 16
    .venv/bin/python examples/evidence/eval_batch_size.py --model DIR --sizes 64 8

DDIM draws its noise once, before the loop, in prompt order, so the noise is the same at any
batch size; what differs is the float sums of batched convolutions and matmuls. A sampler that
draws noise at every step (ddpm) draws it per batch, so its images change outright.
"""
from __future__ import annotations

import argparse

import torch

import orchestrator.models  # noqa: F401  (the variant catalog)
from orchestrator.eval.context import EvalContext
from orchestrator.eval.options import EvalOptions
from orchestrator.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/demo-base", help="An exported model directory.")
    ap.add_argument("--sizes", type=int, nargs=2, default=(64, 16), metavar=("A", "B"))
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    a, b = (EvalContext(None, EvalOptions(samples=args.samples, batch_size=n, device="cpu"), model=model).generated()
            for n in args.sizes)
    as_bytes = lambda x: (x * 255).round()  # noqa: E731  (the 8-bit values a PNG and the detector see)
    differing = (as_bytes(a) != as_bytes(b)).sum().item()
    print(f"batch {args.sizes[0]} vs {args.sizes[1]}, {args.samples} images {tuple(a.shape[1:])}: "
          f"bitwise equal {torch.equal(a, b)}, max |diff| {(a - b).abs().max().item():.2e}, "
          f"8-bit values differing {differing} of {a.numel()}")


if __name__ == "__main__":
    main()
