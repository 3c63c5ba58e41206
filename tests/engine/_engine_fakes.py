"""A tiny model, loaders and a DefaultTrainer over them, shared by the engine tests.

Module-level (not a conftest) so that processes spawned by ``launch`` can unpickle them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uper_parsing.config import get_cfg
from uper_parsing.engine import DefaultTrainer, HookBase
from uper_parsing.utils import comm
from uper_parsing.utils.events import get_event_storage

IMAGE_SIZE = 6


@pytest.fixture(autouse=True)
def engine_test_env() -> Iterator[None]:
    """Autouse in every module that imports it:

    - one torch thread: tiny tensors run fastest so (and OpenMP spinning hurts on a busy box);
    - the ``uper_parsing`` logger (which ``setup_logger`` reconfigures: handlers, no
      propagation) is restored afterwards, so later tests' ``caplog`` still sees its records.
    """
    threads = torch.get_num_threads()
    logger = logging.getLogger("uper_parsing")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture
def uper_logs() -> Iterator[list[logging.LogRecord]]:
    """Records logged under the ``uper_parsing`` logger, whether or not it propagates."""
    records: list[logging.LogRecord] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = ListHandler(level=logging.DEBUG)
    logger = logging.getLogger("uper_parsing")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


class FakeSegModel(nn.Module):
    """list[dict(image (3,H,W) float, target (H,W) float)] -> {"loss_x", "loss_y"} in training."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, 1, 1)
        self.last_activation_dtype: torch.dtype | None = None

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        x = torch.stack([d["image"] for d in batched_inputs]).to(self.device)
        features = self.backbone(x)
        self.last_activation_dtype = features.dtype
        pred = self.head(features)[:, 0]
        if not self.training:
            return [{"sem_seg": p[None]} for p in pred]
        target = torch.stack([d["target"] for d in batched_inputs]).to(self.device)
        return {
            "loss_x": F.mse_loss(pred.float(), target),
            "loss_y": 0.1 * pred.float().abs().mean(),
        }


def make_batch(seed: int, batch_size: int = 2, nan: bool = False) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        image = torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
        if nan:
            image[0, 0, 0] = float("nan")
        batch.append({"image": image, "target": torch.randn(IMAGE_SIZE, IMAGE_SIZE, generator=g)})
    return batch


class IterationSeededLoader:
    """Infinite loader whose batch depends only on the trainer's iteration (and rank), so that a
    resumed run sees the same data as an uninterrupted one. ``nan_at`` poisons that iteration."""

    def __init__(self, batch_size: int = 2, nan_at: int | None = None) -> None:
        self.batch_size = batch_size
        self.nan_at = nan_at

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        while True:
            it = get_event_storage().iter
            seed = 1000 * it + comm.get_rank()
            yield make_batch(seed, self.batch_size, nan=it == self.nan_at)


class FakeTrainer(DefaultTrainer):
    """DefaultTrainer on FakeSegModel; ``test`` reports a number computed from the weights."""

    @classmethod
    def build_model(cls, cfg: Any) -> nn.Module:
        torch.manual_seed(0)
        return FakeSegModel().to(cfg.MODEL.DEVICE)

    @classmethod
    def build_train_loader(cls, cfg: Any) -> IterationSeededLoader:
        return IterationSeededLoader(cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())

    @classmethod
    def test(cls, cfg: Any, model: nn.Module, evaluators: Any = None) -> OrderedDict:
        weight_sum = sum(float(p.detach().sum()) for p in model.parameters())
        all_sums = comm.all_gather(weight_sum)
        if not comm.is_main_process():
            return OrderedDict()
        return OrderedDict(
            sem_seg=OrderedDict(mIoU=weight_sum, ranks_agree=float(len(set(all_sums)) == 1))
        )


class LRRecorder(HookBase):
    """Records the optimizer's learning rates at the start of each iteration."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def before_step(self) -> None:
        self.lrs[self.trainer.iter] = [g["lr"] for g in self.trainer.optimizer.param_groups]


class CrashAt(HookBase):
    """Raises at the start of iteration ``iteration`` (a killed run)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise RuntimeError(f"simulated crash at iteration {self.iteration}")


def make_cfg(output_dir: str, **overrides: Any):
    """A small CPU training config: 12 iterations, checkpoints every 3, warmup + poly LR."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SEED = 0
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.BASE_LR_END = 0.001
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 1e-3
    cfg.SOLVER.MAX_ITER = 12
    cfg.SOLVER.WARMUP_ITERS = 4
    cfg.SOLVER.WARMUP_FACTOR = 0.1
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATASETS.TEST = ("fake_val",)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return cfg
