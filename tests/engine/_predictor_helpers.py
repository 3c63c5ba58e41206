"""Tiny models of each task family, saved by the trainer's checkpointer, on a tiny synthetic set
registered under names no fresh process knows."""

from __future__ import annotations

from pathlib import Path

from uper_parsing.config import get_cfg
from uper_parsing.data import DatasetCatalog
from uper_parsing.data.datasets import (
    SyntheticParams,
    register_synthetic_multitask,
    register_synthetic_panoptic,
    register_synthetic_scenes,
)
from uper_parsing.data.datasets.synthetic import prepare_synthetic_scenes

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "predictor_tiny"  # registered in this process only
PARAMS = SyntheticParams(
    seed=5, image_size=64, num_train=6, num_val=2, formats=("ade", "broden", "coco_panoptic")
)
QUICKSTARTS = {
    "sem_seg": "semantic_fpn_R18_synthetic.yaml",
    "coco_panoptic_seg": "panoptic_fpn_R18_synthetic.yaml",
    "multitask": "unified_parsing_R18_synthetic.yaml",
}
DATASETS = {"sem_seg": "sem_seg", "coco_panoptic_seg": "panoptic", "multitask": "multitask"}
SHRINK = {
    "sem_seg": ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 32],
    "coco_panoptic_seg": ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.FPN.OUT_CHANNELS", 32],
    "multitask": ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 16, "MODEL.MULTITASK.TEXTURE_CONVS_DIM", 8,
                  "MODEL.MULTITASK.TEXTURE_NUM_CONVS", 1,
                  "MODEL.MULTITASK.TEXTURE_PHASE_ITERS", 0],
}  # fmt: skip


def prepare_tiny_sets(root: Path) -> None:
    """Generate the tiny set under ``root/PREFIX`` and register its three families."""
    prepare_synthetic_scenes(root / PREFIX, PARAMS)
    if f"{PREFIX}_sem_seg_train" not in DatasetCatalog:
        register_synthetic_scenes(PREFIX, params=PARAMS)
        register_synthetic_multitask(PREFIX, params=PARAMS)
        register_synthetic_panoptic(PREFIX, params=PARAMS)


def tiny_cfg(family: str, output_dir: Path):
    """The family's quickstart config, shrunk, on the tiny set, on the CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "quickstart" / QUICKSTARTS[family]))
    kind = DATASETS[family]
    cfg.merge_from_list(
        [
            *SHRINK[family],
            "DATASETS.TRAIN", f"('{PREFIX}_{kind}_train',)",
            "DATASETS.TEST", f"('{PREFIX}_{kind}_val',)",
            "MODEL.DEVICE", "cpu",
            "DATALOADER.NUM_WORKERS", 0,
            "SOLVER.IMS_PER_BATCH", 2,
            # the stored config keeps the BatchNorms of a predictor unfolded, so that its outputs
            # equal the trained model's exactly (test_folded_predictor_... checks the folded one)
            "TEST.FOLD_BATCH_NORM", "never",
            "OUTPUT_DIR", str(output_dir),
        ]
    )  # fmt: skip
    return cfg
