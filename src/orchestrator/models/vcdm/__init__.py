"""Visual Chain-of-Thought diffusion (VCDM): a prior diffusion model samples a CLIP image embedding,
then an image diffusion model generates the image conditioned on it.

variant.py holds its spec, `SPEC` (what the registry hands out); options.py its manifest section;
edm.py the prior's EDM preconditioning, loss and Heun sampler; prior.py the prior's transformer;
image.py the embedding-conditioned diffusers U-Net; model.py the container and its directory
layout; embeddings.py the CLIP image embeddings of a dataset, cached in the blob store;
objective.py the loss of both stages; sampling.py the chained `generate`. Importing this package
loads no torch.
"""
from .variant import SPEC

__all__ = ["SPEC"]
