"""Which torch device a trial trains on, from the GPUs its scheduler assigned it. No Ray here: the
trainer actor passes Ray's assignment in (`ray.get_gpu_ids()`); `orch train` passes nothing and
the loop keeps its default (CUDA when the process sees one).

A trial with GPUs trains on `cuda`; the collective backend follows the device (NCCL on CUDA,
gloo on CPU), so every rank of a group on like nodes picks the same one. A trial that was
assigned GPUs in a process where CUDA is not usable (a CPU build of torch, a node that declares
GPUs it lacks, as the tests' fake-GPU nodes do) falls back to the CPU and says why: the caller
logs and journals `fallback`; it is never silent.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DeviceChoice:
    device: str                   # "cuda:0", "cpu"
    gpu_ids: tuple[str, ...]      # what the scheduler assigned (physical ids, as Ray names them)
    fallback: str | None = None   # why a trial with GPUs trains on the CPU; None when it does not

    @property
    def backend(self) -> str:
        """The torch.distributed backend for a data-parallel group on this device."""
        return "nccl" if self.device.startswith("cuda") else "gloo"

    def as_dict(self) -> dict:
        return {**asdict(self), "gpu_ids": list(self.gpu_ids), "backend": self.backend}


def choose_device(gpu_ids: Sequence[int | str], *, cuda_available: bool | None = None,
                  visible: str | None = None) -> DeviceChoice:
    """The device for a trainer assigned `gpu_ids` (none: the CPU, even on a GPU host, whose GPUs
    belong to other trials). `cuda_available` defaults to torch's answer and `visible` to
    CUDA_VISIBLE_DEVICES; both are parameters so the choice is testable on a CPU machine.

    Ray sets CUDA_VISIBLE_DEVICES to the assigned ids, so the first of them is `cuda:0` in the
    process; where it is unset (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES) the id is the index."""
    ids = tuple(str(i) for i in gpu_ids)
    if not ids:
        return DeviceChoice("cpu", ids)
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return DeviceChoice("cpu", ids, f"assigned GPU(s) {', '.join(ids)} but torch.cuda.is_available() is "
                                         "false in this process (a CPU build of torch, or no driver): training on cpu")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    shown = [v.strip() for v in visible.split(",")] if visible else []
    if not shown:
        index = int(ids[0])
    elif ids[0] in shown:
        index = shown.index(ids[0])
    else:  # visible devices named otherwise (UUIDs): the assigned one is the first
        index = 0
    return DeviceChoice(f"cuda:{index}", ids)
