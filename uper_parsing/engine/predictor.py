"""Inference on single images, and pictures of predictions on a dataset's images."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors

__all__ = ["DefaultPredictor", "write_prediction_pictures"]

logger = logging.getLogger(__name__)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class DefaultPredictor:
    """Build the model of ``cfg``, load ``MODEL.WEIGHTS`` and run it on one image at a time.

    ``predictor(image)`` takes an (H, W, 3) uint8 image in ``INPUT.FORMAT`` order, applies the
    test-time resize of ``cfg`` and returns the model's output dict for it (``sem_seg``:
    Tensor (K, H, W) scores at the image's size).
    """

    def __init__(self, cfg: Any, model: nn.Module | None = None) -> None:
        from ..checkpoint import Checkpointer
        from ..data import build_augmentation
        from ..modeling import build_model, prepare_for_inference

        self.cfg = cfg.clone()
        if model is None:
            model = build_model(self.cfg)
            checkpointer = Checkpointer(
                model,
                partial=cfg.MODEL.WEIGHTS_PARTIAL,
                weights_format=cfg.MODEL.WEIGHTS_FORMAT,
            )
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
            prepare_for_inference(model, self.cfg)
        self.model = _unwrap(model)
        self.augmentation = build_augmentation(self.cfg, is_train=False)

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        from ..data import apply_transforms

        height, width = image.shape[:2]
        tensor = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        tensor, _ = apply_transforms(self.augmentation, tensor)
        inputs = {"image": tensor.as_subclass(torch.Tensor), "height": height, "width": width}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return self.model([inputs])[0]
        finally:
            self.model.train(was_training)


def _spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``."""
    if total == 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total))})


def _sem_seg_picture(image: np.ndarray, outputs: dict, d: dict, metadata: Any) -> np.ndarray:
    """[image | prediction | ground truth] of a semantic dataset's image."""
    from ..data import read_sem_seg
    from ..utils.visualizer import visualize_sem_seg_prediction

    prediction = outputs["sem_seg"].argmax(dim=0).cpu().numpy()
    gt = None
    if "sem_seg_file_name" in d:
        gt = read_sem_seg(d["sem_seg_file_name"], metadata, expected_hw=prediction.shape)
    return visualize_sem_seg_prediction(image, prediction, metadata, gt)


def _multitask_picture(image: np.ndarray, outputs: dict, d: dict, metadata: Any) -> np.ndarray:
    """[image | object | part | material] + scene / texture of a multi-task dataset's image."""
    from ..utils.multitask_visualizer import visualize_multitask_prediction

    return visualize_multitask_prediction(image, outputs, metadata, inputs=d)


def _panoptic_picture(image: np.ndarray, outputs: dict, d: dict, metadata: Any) -> np.ndarray:
    """[image | prediction | ground truth] of a panoptic dataset's image; the ground truth is the
    dict's panoptic PNG, left out when the dict has no ``pan_seg_file_name``."""
    from ..data.panoptic_utils import read_panoptic
    from ..utils.panoptic_visualizer import visualize_panoptic_prediction

    gt = None
    if "pan_seg_file_name" in d:
        gt = (read_panoptic(d), d["segments_info"])
    return visualize_panoptic_prediction(image, outputs["panoptic_seg"], metadata, gt)


# how a picture of one prediction is drawn, by the dataset's metadata.evaluator_type
PICTURE_DRAWERS = {
    "sem_seg": _sem_seg_picture,
    "multitask": _multitask_picture,
    "coco_panoptic_seg": _panoptic_picture,
}


def write_prediction_pictures(
    cfg: Any, model: nn.Module, dataset_name: str, output_dir: str, num_images: int | None = None
) -> list[str]:
    """Write pictures of the predictions on ``num_images`` images of a dataset, drawn as its
    ``metadata.evaluator_type`` asks (semantic, panoptic: [image | prediction | ground truth]).

    Args:
        num_images: how many (spread over the dataset); default ``TEST.VIS_NUM_IMAGES``.

    Returns:
        The paths written, ``output_dir/<dataset_name>_<image_id>.png``.
    """
    from ..data import DatasetCatalog, MetadataCatalog, read_image
    from ..utils.visualizer import save_image

    num_images = cfg.TEST.VIS_NUM_IMAGES if num_images is None else num_images
    dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    draw = PICTURE_DRAWERS.get(metadata.get("evaluator_type", "sem_seg"))
    if draw is None:
        logger.warning("No pictures for %s: evaluator_type has no drawer", dataset_name)
        return []
    predictor = DefaultPredictor(cfg, model=model)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for idx in _spread(num_images, len(dicts)):
        d = dicts[idx]
        image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
        outputs = predictor(image)
        rgb = image if cfg.INPUT.FORMAT == "RGB" else image[:, :, ::-1]
        picture = draw(np.ascontiguousarray(rgb), outputs, d, metadata)
        image_id = d.get("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0])
        safe_id = str(image_id).replace("/", "_")  # Broden ids carry their folder
        path = os.path.join(output_dir, f"{dataset_name}_{safe_id}.png")
        save_image(picture, path)
        paths.append(path)
    return paths
