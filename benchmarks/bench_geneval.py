"""The geneval suite's throughput: images judged per second end to end (generate, detect, judge, colour), and
how the time splits between generation, detection (Mask2Former and its post-processing) and colour
classification (CLIP on the crops), from the suite's own `info.wall_s`.

Default: the tiny configs on the CPU (tiny SD at 32 px, the tiny Mask2Former of eval/mask2former_configs.py on
64 px inputs, the tiny shapes CLIP), all random weights. The detector's class head is biased to "cup" (random
weights detect nothing otherwise), so every query is a detection and the colour prompts reach the CLIP, as they
do on real images. The metadata is GenEval-shaped: `--prompts` prompts per task, `--per-prompt` images each.

`--real-configs` (for a GPU host; not run on the 2-core development machine): the same with GenEval's
architectures, still random weights (speed does not depend on their values): Mask2Former Swin-S COCO-instance
(transformers' defaults, 100 queries) on inputs of mmdet's test scale (short side 800, long side at most 1333)
and CLIP ViT-L/14 (24 x 1024 vision layers, patch 14, 224 px; 12 x 768 text layers, 768-d projection), images
from the tiny SD at `--resolution` (512 by default). Generation time there is the tiny SD's, not a real model's:
read the detection and colour columns.

    python benchmarks/bench_geneval.py [--prompts 2] [--per-prompt 4] [--steps 10] [--threads 1]
    python benchmarks/bench_geneval.py --real-configs --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TASK_RECORDS = {  # one GenEval-shaped record per task; {a}, {b}: classes
    "single_object": lambda a, b: {"include": [{"class": a, "count": 1}], "prompt": f"a photo of a {a}"},
    "two_object": lambda a, b: {"include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
                                "prompt": f"a photo of a {a} and a {b}"},
    "counting": lambda a, b: {"include": [{"class": a, "count": 2}], "exclude": [{"class": a, "count": 3}],
                              "prompt": f"a photo of two {a}s"},
    "colors": lambda a, b: {"include": [{"class": a, "count": 1, "color": "red"}], "prompt": f"a photo of a red {a}"},
    "position": lambda a, b: {"include": [{"class": b, "count": 1}, {"class": a, "count": 1,
                                                                     "position": ["left of", 0]}],
                              "prompt": f"a photo of a {a} left of a {b}"},
    "color_attr": lambda a, b: {"include": [{"class": a, "count": 1, "color": "red"},
                                            {"class": b, "count": 1, "color": "blue"}],
                                "prompt": f"a photo of a red {a} and a blue {b}"},
}
OTHERS = ("bench", "dog", "car", "vase")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=2, help="prompts per task (6 tasks)")
    p.add_argument("--per-prompt", type=int, default=4, help="images per prompt (GenEval's 4)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps of the tiny SD")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--real-configs", action="store_true", help="Mask2Former Swin-S and CLIP ViT-L/14 configs "
                                                                "(random weights): for a GPU host")
    p.add_argument("--resolution", type=int, default=None, help="generated image side (default 32; 512 with "
                                                                "--real-configs)")
    p.add_argument("--device", default=None, help="default: cuda when available")
    return p.parse_args()


def write_metadata(path: Path, per_task: int) -> None:
    lines = []
    for tag, make in TASK_RECORDS.items():
        for i in range(per_task):
            lines.append(json.dumps({"tag": tag, **make("cup", OTHERS[i % len(OTHERS)])}))
    path.write_text("\n".join(lines) + "\n")


def vit_l14_clip(device: str):
    """CLIP ViT-L/14's architecture (openai/clip-vit-large-patch14) with random weights and the shapes tokenizer
    (its word-level vocabulary; texts are padded to its 32 tokens: text time is cached per class anyway)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from orchestrator.models.clip import ClipEncoder, Preprocess
    from orchestrator.models.common.shapes_tokenizer import build_tokenizer

    tok = build_tokenizer([])
    ids = tok.convert_tokens_to_ids
    cfg = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "max_position_embeddings": 77, "pad_token_id": ids(tok.pad_token),
                     "bos_token_id": ids(tok.bos_token), "eos_token_id": ids(tok.eos_token)},
        vision_config={"image_size": 224, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
                       "num_hidden_layers": 24, "num_attention_heads": 16},
        projection_dim=768)
    torch.manual_seed(0)
    pre = Preprocess.from_config({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
                                  "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                  "image_std": [0.26862954, 0.26130258, 0.27577711]})
    return ClipEncoder(CLIPModel(cfg).eval(), tok, pre, "random ViT-L/14", device)


def main() -> int:
    args = _args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their BLAS
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from orchestrator.eval.mask2former_configs import mask2former_config, save_random_mask2former
    from orchestrator.eval.suites import build_context, run_in_context
    from orchestrator.models.clip import ClipEncoder, Preprocess, build_tiny_clip, preprocessor_config
    from orchestrator.models.loading import LoadedModel
    from orchestrator.models.registry import get_variant
    from orchestrator.models.sd import build_tiny

    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolution = args.resolution or (512 if args.real_configs else 32)
    with tempfile.TemporaryDirectory(prefix="bench-geneval-") as tmp:
        root = Path(tmp)
        write_metadata(root / "meta.jsonl", args.prompts)
        config = mask2former_config("swin-s" if args.real_configs else "tiny")
        t0 = time.perf_counter()
        save_random_mask2former(root / "detector", config, favour="cup", input_size=800 if args.real_configs else 64)
        if args.real_configs:  # mmdet's test scale: short side 800, long side at most 1333
            cfg_path = root / "detector" / "preprocessor_config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["size"] = {"shortest_edge": 800, "longest_edge": 1333}
            cfg_path.write_text(json.dumps(cfg))
            clip = vit_l14_clip(device)
        else:
            model, tok = build_tiny_clip(seed=0)
            clip = ClipEncoder(model, tok, Preprocess.from_config(preprocessor_config(32)), "tiny", device)
        setup_s = time.perf_counter() - t0
        sd = LoadedModel(get_variant("sd"), build_tiny(seed=0, resolution=resolution), "tiny-random")
        ctx = build_context(None, model=sd, clip_encoder=clip, geneval=str(root / "meta.jsonl"),
                            geneval_detector=str(root / "detector"), geneval_per_prompt=args.per_prompt,
                            steps=args.steps, image_size=resolution, device=device)
        started = time.perf_counter()
        [res] = run_in_context(ctx, ["geneval"])
        wall = time.perf_counter() - started
    n = res.metrics[0].n
    split = res.info["wall_s"]
    judged = sum(v for k, v in split.items() if k != "generation")
    kind = "real configs (Mask2Former Swin-S, CLIP ViT-L/14)" if args.real_configs else "tiny configs"
    print(f"geneval suite, {kind}, random weights, device {device}, {torch.get_num_threads()} thread(s); load "
          f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  {n} images ({args.prompts} prompts x 6 tasks x {args.per_prompt}), {resolution} px, "
          f"{args.steps} sampling steps; models built (the detector saved) in {setup_s:.1f} s")
    print(f"  end to end: {n / wall:.2f} images/s ({wall:.2f} s, detector and CLIP loads included)")
    print(f"  judging alone (detect + select + judge + colours): {n / judged:.2f} images/s")
    for part in ("generation", "detection", "colour", "rest"):
        print(f"  {part:<11}{split[part]:>8.2f} s  {100 * split[part] / wall:>5.1f}%  "
              f"{1000 * split[part] / n:>8.1f} ms/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
