"""Random seeds and a description of the software / hardware environment for the logs."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import random
import sys
from datetime import datetime

import numpy as np
import torch

__all__ = ["seed_all_rng", "derived_seed", "collect_env_info"]


def derived_seed(*keys: int) -> int:
    """A 32-bit seed that is a function of ``keys`` (e.g. run seed, rank, iteration), well mixed
    (NumPy's ``SeedSequence``), so that nearby keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def seed_all_rng(seed: int | None = None) -> int:
    """Seed Python's, NumPy's and torch's generators; a ``None`` seed draws a fresh one.

    Returns the seed used (NumPy only accepts seeds below 2**32).
    """
    if seed is None:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        )
    seed = int(seed) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    if _has_accelerator():
        torch.manual_seed(seed)
    else:
        # what torch.manual_seed leaves behind without an accelerator, minus the stack trace it
        # formats for every lazily queued (and here never run) accelerator seeding; the loader
        # seeds once per item and the trainer once per step
        torch.default_generator.manual_seed(seed)
    return seed


@functools.cache
def _has_accelerator() -> bool:
    """Whether torch.manual_seed has any generator to seed besides the CPU's."""
    return (
        torch.cuda.device_count() > 0
        or torch.xpu.device_count() > 0
        or torch.mtia.device_count() > 0
        or torch._C._has_mps
        or hasattr(torch, torch._C._get_privateuse1_backend_name())
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_env_info() -> str:
    """A multi-line table of Python, library, CUDA and GPU versions."""
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("machine", platform.machine()),
        ("numpy", np.__version__),
        ("torch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("torchvision", _version("torchvision")),
        ("fvcore", _version("fvcore")),
        ("torch built with CUDA", str(torch.version.cuda)),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        rows.append(("cuDNN", str(torch.backends.cudnn.version())))
        names: dict[str, list[str]] = {}
        for i in range(torch.cuda.device_count()):
            names.setdefault(torch.cuda.get_device_name(i), []).append(str(i))
        for gpu_name, ids in names.items():
            rows.append((f"GPU {','.join(ids)}", gpu_name))
    rows.append(("CPU threads (torch)", str(torch.get_num_threads())))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def usable_device(name: str) -> str:
    """``name`` ("cuda", "cuda:N", "cpu") if this machine can run it; a CUDA device without CUDA
    becomes "cpu", with a warning."""
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            "MODEL.DEVICE is '%s' but CUDA is not available: using the CPU", name
        )
        return "cpu"
    return name
