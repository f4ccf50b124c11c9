"""LoRA against full finetuning, side by side in one process on the same tiny SD and batch, both
through the project's Trainer (`model.sd.lora` on one side, no lora on the other).

1. Step time: ratio = full-finetune time / LoRA time (above 1: LoRA is faster).
2. What each trains and keeps: trained parameters, and the bytes of one checkpoint (the trained
   modules, their EMA, the optimiser's state) as the loop encodes it.

Runs alternate between the contenders so machine-load drift hits both alike; medians reported.
    python benchmarks/bench_lora.py [--steps 20] [--repeats 5] [--threads 1] [--rank 4] [--dora]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _timing import side_by_side, step_arguments  # benchmarks/ is on sys.path when a script runs
from orchestrator.data.image_text import shapes_data
from orchestrator.manifest.schema import ModelSpec, TrainSpec
from orchestrator.models.registry import get_variant
from orchestrator.storage import open_store
from orchestrator.training.checkpoint import encode
from orchestrator.training.control import LoopConfig
from orchestrator.training.loop import Trainer


def main(argv: list[str] | None = None) -> None:
    own = argparse.ArgumentParser(add_help=False)   # this benchmark's flags; the rest are the step flags
    own.add_argument("--rank", type=int, default=4)
    own.add_argument("--dora", action="store_true")
    mine, rest = own.parse_known_args(sys.argv[1:] if argv is None else argv)
    rank, dora = mine.rank, mine.dora
    args = step_arguments(__doc__.splitlines()[0], batch_size=16, n=256, argv=rest)
    data = shapes_data(args.n, seed=0, size=32, caption="spatial")
    spec = TrainSpec(steps=10**6, batch_size=args.batch_size, lr=1e-4, checkpoint_every=10**6, seed=0,
                     ema_decay=0.999)
    store = open_store(tempfile.mkdtemp(prefix="bench-lora-"))
    sd = get_variant("sd")

    def trainer(section: dict | None, prefix: str) -> Trainer:
        model = ModelSpec.model_validate({"variant": "sd", "base": "tiny-random",
                                          "sd": {"lora": section} if section is not None else {}},
                                         context={"check_files": False})
        return Trainer(sd, sd.load_base(model, None, None), data, spec, store, prefix, options=model.options,
                       config=LoopConfig(export_model=False))

    lora = trainer({"rank": rank, "dora": dora}, "bench/lora")
    full = trainer(None, "bench/full")
    t_lora, t_full = side_by_side(lora.train_step, full.train_step, args.steps, args.repeats)
    kind = "DoRA" if dora else "LoRA"
    print(f"step time (batch {args.batch_size}, 32 px, cached latents/text, EMA, {args.threads} thread(s), "
          f"median of {args.repeats}x{args.steps}):")
    print(f"  {kind} rank {rank:<4} {t_lora * 1e3:8.2f} ms/step")
    print(f"  full finetune  {t_full * 1e3:8.2f} ms/step")
    print(f"  ratio full/{kind} = {t_full / t_lora:.3f}")
    for name, t in ((f"{kind} rank {rank}", lora), ("full finetune", full)):
        params = sum(p.numel() for p in t.params)
        print(f"  {name:<14} trains {params:>9,} parameters; one checkpoint {len(encode(t.state_dict())):>11,} bytes")


if __name__ == "__main__":
    main()
