"""GLIDE-mini (OpenAI's base-filtered GLIDE): pixel-space text-to-image diffusion, the project's own
module (no installable library has it).

variant.py holds its spec, `SPEC` (what the registry hands out); options.py its manifest section;
config.py the architecture (full and tiny); unet.py and text.py the networks, named as the
released checkpoint; diffusion.py the cosine schedule, learned variance, hybrid loss and respaced
samplers; objective.py the finetuning loss; sampling.py classifier-free guidance; tokenizer.py
GPT-2 BPE and the shapes words; model.py the container, directory layout and the release loader.
Importing this package loads no torch.
"""
from .variant import SPEC

__all__ = ["SPEC"]
