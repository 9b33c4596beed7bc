"""Which number format training, distillation, evaluation and serving compute in.

`auto` (every recipe's and the server's default) picks bf16 where the hardware has bf16 units and
fp32 elsewhere:
- a GPU: bf16 where CUDA supports it (what TRL defaults to);
- a CPU: bf16 autocast where it has AVX512-BF16 or AMX-BF16 units (matrix products about twice
  as fast as fp32 there); fp32 on CPUs without them, where bf16 is emulated and slower.
The weights stay fp32 in every case: autocast runs the matrix products in bf16 and keeps the
losses, softmaxes and optimiser states in fp32, as mixed precision does on a GPU.

The choice is printed once per process, with its reason.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convdistill.errors import BadRecipe

PRECISIONS = ("auto", "bf16", "fp32")
# CPU feature flags (as /proc/cpuinfo names them) of units that compute bf16 matrix products
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16" or "fp32"
    device: str  # "cpu" or "cuda"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags from Linux's /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_bf16_units(flags: Iterable[str] | None = None) -> str | None:
    """The flag of the CPU's bf16 units (amx_bf16 or avx512_bf16), or None when it has none."""
    have = set(cpu_flags() if flags is None else flags)
    return next((flag for flag in BF16_CPU_FLAGS if flag in have), None)


def resolve_precision(requested: str = "auto", flags: Iterable[str] | None = None,
                      gpu: bool | None = None) -> Precision:
    """What `requested` (auto, bf16 or fp32) means on this machine. `flags` and `gpu` stand for
    the machine's own (tests pass them)."""
    if requested not in PRECISIONS:
        raise BadRecipe(f"precision {requested!r}: choose {', '.join(PRECISIONS)}")
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    if requested != "auto":
        return Precision(requested, device, "asked for")
    if gpu:
        import torch

        if torch.cuda.is_bf16_supported():
            return Precision("bf16", device, "the GPU supports bf16")
        return Precision("fp32", device, "the GPU has no bf16 support")
    units = cpu_bf16_units(flags)
    if units is not None:
        return Precision("bf16", device, f"the CPU has {units} units")
    return Precision("fp32", device, f"the CPU has no bf16 units ({' or '.join(BF16_CPU_FLAGS)})")


_announced: set[tuple[str, str]] = set()


def announce(precision: Precision, what: str) -> None:
    """One line on stderr, once per process and kind of work, saying what computes in what."""
    key = (what, precision.name)
    if key not in _announced:
        _announced.add(key)
        print(f"[convdistill] precision: {what} in {precision.name} on {precision.device} ({precision.reason})",
              file=sys.stderr, flush=True)


def training_autocast(args: Any) -> contextlib.AbstractContextManager[Any]:
    """Autocast for a Trainer's loss under its `bf16` / `fp16` arguments. Accelerate casts inside
    the model's own forward only; a loss that calls the decoder stack and the head apart (to
    project only the positions it reads) needs the context around it."""
    import torch

    if args.bf16 or args.fp16:
        return torch.autocast(device_type=args.device.type, dtype=torch.bfloat16 if args.bf16 else torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def autocast(precision: Precision) -> Iterator[None]:
    """bf16 autocast for the forward passes inside, when `precision` is bf16; nothing otherwise."""
    if not precision.bf16:
        yield
        return
    import torch

    with torch.autocast(device_type=precision.device, dtype=torch.bfloat16):
        yield
