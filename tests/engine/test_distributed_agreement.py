"""Two processes train on what one process trains on: the union of their batches is the batch of
one process of twice the size (files, augmentations, label maps), and their averaged gradients
equal its gradients, for the plain (semantic) and the multi-task (per-source) loader.

Both runs use the quickstart's ResNet-18 models with frozen BN and GN heads (no batch statistics),
crops that need no padding and labels without ignore pixels, so that a loss averaged over two
halves of a batch is the loss of the whole batch. 2 processes, gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from _engine_fakes import engine_test_env  # noqa: F401

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    DatasetCatalog,
    SyntheticParams,
    build_mapper,
    build_train_loader,
    register_synthetic_multitask,
    register_synthetic_scenes,
)
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.data.datasets.synthetic import prepare_synthetic_scenes
from uper_parsing.engine import create_ddp_model, launch
from uper_parsing.modeling import build_model
from uper_parsing.tasks import configure_model
from uper_parsing.utils import comm

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "synthetic_dist"
PARAMS = SyntheticParams(seed=4, image_size=64, num_train=12, num_val=2, formats=("ade", "broden"))
ITERATIONS = 5  # multi-task: batches of all three sources; plain: more than an epoch
LABEL_KEYS = ("sem_seg", "object", "part", "material")
LOADERS = ("plain", "multitask")


def _register() -> None:
    if f"{PREFIX}_sem_seg_train" not in DatasetCatalog:
        register_synthetic_scenes(PREFIX, params=PARAMS)
        register_synthetic_multitask(PREFIX, params=PARAMS)


def _cfg(loader: str) -> Any:
    """The quickstart config of ``loader`` on the small synthetic set: global batch 4, 64 px crops
    of images resized to at least 64 px (no padding), no batch statistics, no dropout."""
    config = {"plain": "semantic_fpn_R18_synthetic", "multitask": "unified_parsing_R18_synthetic"}
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / "configs/quickstart" / f"{config[loader]}.yaml"))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", 4, "DATALOADER.NUM_WORKERS", 0, "SEED", 7,
         "INPUT.RESIZE_SCALE", [256, 64], "INPUT.RATIO_RANGE", [1.0, 1.5],
         "INPUT.CROP.SIZE", [64, 64], "MODEL.RESNETS.NORM", "FrozenBN",
         "MODEL.SEM_SEG_HEAD.NORM", "GN", "MODEL.SEM_SEG_HEAD.DROPOUT", 0.0]
    )  # fmt: skip
    if loader == "plain":
        cfg.DATASETS.TRAIN = (f"{PREFIX}_sem_seg_train",)
    else:  # no parts: their loss is a mean per object over the batch, not over its halves
        cfg.DATASETS.TRAIN = (f"{PREFIX}_multitask_train",)
        cfg.MODEL.MULTITASK.TASKS = ["object", "material", "scene", "texture"]
        cfg.MODEL.MULTITASK.TEXTURE_PHASE_ITERS = 0
    cfg.DATASETS.TEST = ()
    return cfg


class FullyLabelled:
    """The config's mapper, with ignored pixels of the dense labels set to class 0, so that a
    batch's mean loss is the mean of its halves' mean losses."""

    def __init__(self, mapper: Callable[[dict], dict], ignore: int = 255) -> None:
        self.mapper, self.ignore = mapper, ignore

    def __call__(self, dataset_dict: dict) -> dict:
        out = self.mapper(dataset_dict)
        for key in ("sem_seg", "object", "material"):
            if key in out:
                out[key] = out[key].masked_fill(out[key] == self.ignore, 0)
        return out


def _batches_and_gradients(loader: str) -> tuple[list[list[dict]], list[dict[str, torch.Tensor]]]:
    """The first ``ITERATIONS`` batches of this process, and the (DDP-averaged) gradients of the
    model at its initial weights on each of them."""
    cfg = _cfg(loader)
    data = iter(build_train_loader(cfg, FullyLabelled(build_mapper(cfg, True))))
    batches = [next(data) for _ in range(ITERATIONS)]
    torch.manual_seed(0)
    configure_model(cfg, check=False)  # set-up: a parser's class counts from the metadata
    model = build_model(cfg)
    ddp_model = create_ddp_model(model)
    gradients = []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        sum(ddp_model(batch).values()).backward()
        gradients.append(
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        )
    return batches, gradients


def _run_rank(output_dir: str) -> None:
    torch.set_num_threads(1)
    _register()
    for loader in LOADERS:
        batches, gradients = _batches_and_gradients(loader)
        torch.save(
            {"batches": batches, "gradients": gradients},
            os.path.join(output_dir, f"{loader}_rank{comm.get_rank()}.pt"),
        )


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    prepare_synthetic_scenes(root / PREFIX, PARAMS)
    return root


@pytest.fixture(scope="module")
def two_processes(datasets_dir, tmp_path_factory) -> Path:
    """Folder of ``<loader>_rank<r>.pt``: each rank's batches and averaged gradients."""
    out = tmp_path_factory.mktemp("two_processes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATASETS_ENV, str(datasets_dir))
        launch(
            _run_rank,
            num_gpus_per_machine=2,
            dist_url="auto",
            args=(str(out),),
            timeout=timedelta(seconds=120),
        )
    return out


@pytest.fixture(scope="module")
def one_process(datasets_dir) -> dict[str, tuple[list, list]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATASETS_ENV, str(datasets_dir))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _register()
            return {loader: _batches_and_gradients(loader) for loader in LOADERS}
        finally:
            torch.set_num_threads(threads)


def _ranks(folder: Path, loader: str) -> list[dict]:
    return [torch.load(folder / f"{loader}_rank{r}.pt", weights_only=False) for r in (0, 1)]


def _item_key(d: dict) -> tuple:
    """What identifies a mapped training item: its file and every tensor the model reads."""
    tensors = [d["image"]] + [d[k] for k in LABEL_KEYS if k in d]
    return (
        d["file_name"],
        d.get("scene"),
        d.get("texture"),
        tuple((tuple(t.shape), str(t.dtype), t.numpy().tobytes()) for t in tensors),
    )


@pytest.mark.parametrize("loader", LOADERS)
def test_union_of_two_processes_batches_is_one_process_batch(two_processes, one_process, loader):
    ranks = _ranks(two_processes, loader)
    single, _ = one_process[loader]
    for it in range(ITERATIONS):
        parts = [r["batches"][it] for r in ranks]
        assert [len(p) for p in parts] == [2, 2] and len(single[it]) == 4
        if loader == "multitask":  # every rank trains the same heads in a step
            assert {d["source"] for p in parts for d in p} == {single[it][0]["source"]}
        union = [d for p in parts for d in p]
        files = sorted(d["file_name"] for d in union)
        assert files == sorted(d["file_name"] for d in single[it]), f"iteration {it}: files"
        same = sorted(map(_item_key, union)) == sorted(map(_item_key, single[it]))
        assert same, f"iteration {it}: the same files, augmented differently"
    if loader == "multitask":
        assert {b[0]["source"] for b in single} == {"scenes", "materials", "textures"}
    else:  # the first epoch (3 batches): every image once, the ranks' shards disjoint
        shards = [[d["file_name"] for b in r["batches"][:3] for d in b] for r in ranks]
        assert len(set(shards[0] + shards[1])) == len(shards[0] + shards[1]) == PARAMS.num_train


@pytest.mark.parametrize("loader", LOADERS)
def test_averaged_gradients_of_two_processes_equal_one_process(two_processes, one_process, loader):
    ranks = _ranks(two_processes, loader)
    _, single = one_process[loader]
    for it in range(ITERATIONS):
        expected = single[it]
        for rank in ranks:
            got = rank["gradients"][it]
            assert got.keys() == expected.keys()
            for name, grad in expected.items():
                torch.testing.assert_close(
                    got[name], grad, rtol=0, atol=1e-5, msg=f"iteration {it}: {name}"
                )
