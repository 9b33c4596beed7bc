"""Is this process one of several launched to train together, and can they?

`accelerate launch --multi_gpu --num_processes N` (or torchrun) on a machine without a GPU starts
N processes with WORLD_SIZE=N, but unless the trainer is told `use_cpu`, accelerate sees no
device to spread over and skips the process group: each process then trains alone on all the
data, and all of them write the same output folder, without an error. This is checked before
anything loads.
"""

from __future__ import annotations

import os

from convdistill.errors import BadRecipe


class LaunchError(BadRecipe):
    """Several processes were launched but cannot train together; the message says what to add."""


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU, MPS, ... alike
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def check_distributed_launch(use_cpu: bool) -> None:
    """Raise LaunchError when WORLD_SIZE > 1, no accelerator is present and `use_cpu` is off."""
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) <= 1 or use_cpu or _has_accelerator():
        return
    raise LaunchError(
        f"{world} processes were launched but this machine has no GPU, so each would train alone "
        "on all the data and write the same folder: add --use_cpu true to train them together on "
        "the CPU (configs/accelerate/cpu-2proc.yaml), or launch one process"
    )
