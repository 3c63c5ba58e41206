"""Converted checkpoints carry the metadata of the dataset their weights were trained on (and
the config, when the tool is given one), so that Predictor.from_checkpoint needs nothing else."""

from __future__ import annotations

import pytest
import torch
from _tools import load_tool

from uper_parsing.checkpoint import read_checkpoint_record
from uper_parsing.checkpoint.conversion import Conversion
from uper_parsing.checkpoint.published import published_metadata
from uper_parsing.config import get_cfg
from uper_parsing.tasks import PANOPTIC, SEM_SEG


def _conversion(source: str, kind: str = "model", **rows: int) -> Conversion:
    keys = {
        "semantic": "sem_seg_head.predictor.weight",
        "boxes": "roi_heads.box_predictor.cls_score.weight",
    }
    state = {keys[name]: torch.zeros(n, 1) for name, n in rows.items()}
    return Conversion(state, kind, source, source, {}, [], [])


def test_semantic_models_of_150_classes_get_ade20k():
    for source in ("mmseg", "hf-upernet", "csail"):
        metadata = published_metadata(_conversion(source, semantic=150))
        assert len(metadata["stuff_classes"]) == 150 and metadata["stuff_classes"][0] == "wall"
        assert SEM_SEG.has_metadata(metadata) and metadata["evaluator_type"] == "sem_seg"
    assert published_metadata(_conversion("mmseg", semantic=19)) is None  # Cityscapes: unknown
    assert published_metadata(_conversion("mmseg", kind="backbone", semantic=150)) is None
    assert published_metadata(_conversion("timm", semantic=150)) is None


def test_detectron2_panoptic_models_get_coco_panoptic():
    metadata = published_metadata(_conversion("detectron2", boxes=81, semantic=54))
    assert len(metadata["thing_classes"]) == 80 and len(metadata["stuff_classes"]) == 53
    assert metadata["thing_dataset_id_to_contiguous_id"][90] == 79
    assert PANOPTIC.has_metadata(metadata) and metadata["evaluator_type"] == "coco_panoptic_seg"
    assert published_metadata(_conversion("detectron2", boxes=2, semantic=3)) is None


def test_a_converter_s_own_metadata_wins():
    conversion = _conversion("csail-upp")
    conversion.metadata = {"object_classes": ["a"], "evaluator_type": "multitask"}
    assert published_metadata(conversion) is conversion.metadata


def _tool():
    return load_tool("convert_weights")


@pytest.mark.parametrize("extension", [".pth", ".safetensors"])
def test_the_tool_writes_metadata_and_config(tmp_path, extension):
    conversion = _conversion("detectron2", boxes=81, semantic=54)
    config = get_cfg().dump()
    out = tmp_path / f"converted{extension}"
    _tool().write(conversion, {"codebase": "detectron2"}, str(out), config)
    stored_config, metadata = read_checkpoint_record(str(out))
    assert stored_config == config
    assert metadata["stuff_classes"][-1] == "rug-merged"
    restored = PANOPTIC.restore_metadata(metadata, "converted")  # JSON keys back to ints
    assert restored.stuff_dataset_id_to_contiguous_id[200] == 52
