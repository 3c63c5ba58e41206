"""Exportable forms of the meta-architectures: one image tensor in, named score maps out.

The export contract (the same for ONNX and TorchScript):

- input ``images``: Tensor (N, 3, H, W) float32, raw pixel values on the 0-255 scale in the
  channel order of ``INPUT.FORMAT`` (what the mapper hands the model as uint8, as float), any N,
  H, W. Normalisation (``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``) and padding to the size
  divisibility (when ``TEST.PAD_TO_DIVISIBILITY``) happen inside the graph. Test-time resizing
  (``INPUT.MIN_SIZE_TEST``) does not: the graph scores the image it is given, at its size.
- outputs, named (``output_names``), each at the input size:
  ``SemanticSegmentor``: ``sem_seg`` (N, K, H, W) logits;
  ``UnifiedPerceptualParser``: one per built task in ``TASKS`` order, ``object`` (N, K_obj, H, W)
  and ``material`` (N, K_mat, H, W) logits, ``part`` (N, P, H, W) probabilities (a softmax
  within each object's parts, as the model returns them), ``scene`` (N, K_scene) and ``texture``
  (N, K_tex) logits;
  ``PanopticFPN`` (semantic branch only): ``sem_seg`` (N, K_st + 1, H, W) logits.

Each equals the model's own whole-image inference (``TEST.MODE "whole"`` without test-time
augmentation) on the same image. Sliding windows and test-time augmentation loop over a
data-dependent number of windows and scales; a caller runs them around the exported graph, and
:func:`exportable_model` rejects a model configured for them. Panoptic FPN's RPN, RoI heads and
panoptic merge do not export: the number of proposals kept by NMS, of detections and of segments
depends on the image, and the merge loops over them in Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import resize_to
from ..modeling.meta_arch import PanopticFPN, SemanticSegmentor, UnifiedPerceptualParser
from .pooling import with_exportable_pools

__all__ = [
    "ExportableSegmentor",
    "ExportableParser",
    "ExportablePanopticSemantic",
    "EXPORTABLE_MODELS",
    "NotExportableError",
    "exportable_model",
]


class NotExportableError(ValueError):
    """A model, or a part or setting of it, that has no exportable form."""


def pad_bottom_right(images: torch.Tensor, size_divisibility: int) -> torch.Tensor:
    """Pad images: Tensor (N, C, H, W) with zeros at the bottom and right to multiples of
    ``size_divisibility`` (0 / 1: unchanged). Unlike ``layers.pad_to_multiple`` it always pads
    (possibly by 0): a traced graph must not branch on the size it was traced at."""
    if size_divisibility <= 1:
        return images
    height, width = images.shape[-2:]
    return F.pad(images, (0, (-width) % size_divisibility, 0, (-height) % size_divisibility))


def crop_top_left(
    x: torch.Tensor,
    height: int | torch.SymInt | torch.Tensor,
    width: int | torch.SymInt | torch.Tensor,
) -> torch.Tensor:
    """x: Tensor (N, C, H', W') -> Tensor (N, C, height, width), its top-left corner, gathered
    by index rather than sliced: a slice is a view whose strides make the exporter guard on
    whether the padded size equals the input size, which fixes it to the size traced."""
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


class _ExportableBase(nn.Module):
    """Normalise, pad, run ``dense_logits``, resize each map to the padded size and crop it to
    the input: the model's whole-image inference as one traceable function."""

    output_names: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_whole_inference(model)
        # NCHW weights: with channels-last ones (MODEL.CHANNELS_LAST, an eager-speed setting)
        # the tracer picks convolution kernels by batch size and fixes the batch
        copy = with_exportable_pools(model).to(memory_format=torch.contiguous_format)
        self.model = copy.eval()
        pad = getattr(model, "inference", None) is None or model.inference.pad_to_divisibility
        self.size_divisibility = model.size_divisibility if pad else 0

    def dense_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images: Tensor (N, 3, Hp, Wp) normalised. Returns the outputs in ``output_names``
        order: maps (N, K, h, w) at the head stride, image-level logits (N, K)."""
        raise NotImplementedError

    def finish(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Outputs at the input size -> the exported outputs (default: unchanged)."""
        return outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """images: Tensor (N, 3, H, W) float, 0-255 in ``INPUT.FORMAT`` order. Returns the
        outputs named ``output_names`` (one Tensor when there is one): maps (N, K, H, W),
        image-level logits (N, K)."""
        height, width = images.shape[-2:]
        normalised = (images - self.model.pixel_mean) / self.model.pixel_std
        padded = pad_bottom_right(normalised, self.size_divisibility)
        outputs = tuple(
            crop_top_left(resize_to(x, padded.shape[-2:]), height, width) if x.dim() == 4 else x
            for x in self.dense_logits(padded)
        )
        outputs = self.finish(outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def _check_whole_inference(model: nn.Module) -> None:
    settings = getattr(model, "inference", None)
    if settings is None:
        return
    if settings.mode != "whole":
        raise NotExportableError(
            f"TEST.MODE '{settings.mode}': only whole-image inference exports (set TEST.MODE "
            "whole; sliding windows can be run around the exported graph)"
        )
    if settings.tta:
        raise NotExportableError(
            "TEST.AUG.ENABLED True: test-time augmentation does not export (set "
            "TEST.AUG.ENABLED False; scales and flips can be run around the exported graph)"
        )


class ExportableSegmentor(_ExportableBase):
    """:class:`SemanticSegmentor` (UPerNet, PSPNet, Semantic FPN, FCN): ``sem_seg`` logits."""

    output_names = ("sem_seg",)

    def dense_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.model.logits(images),)


class ExportableParser(_ExportableBase):
    """:class:`UnifiedPerceptualParser`: one output per built task (``output_names``)."""

    def __init__(self, model: UnifiedPerceptualParser) -> None:
        super().__init__(model)
        self.output_names = tuple(model.tasks)

    def dense_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model.task_logits(images)
        return tuple(logits[task] for task in self.output_names)

    def finish(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The part logits become per-object probabilities, as the model returns them."""
        if "part" not in self.output_names:
            return outputs
        part = self.output_names.index("part")
        probabilities = self.model.heads["part"].probabilities(outputs[part])
        return (*outputs[:part], probabilities, *outputs[part + 1 :])


class ExportablePanopticSemantic(_ExportableBase):
    """:class:`PanopticFPN`'s semantic branch (backbone + FPN + semantic head): ``sem_seg``
    logits over ``["things", *stuff_classes]``. The RPN, RoI heads and panoptic merge are left
    out (see the module docstring)."""

    output_names = ("sem_seg",)

    def dense_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.model.sem_seg_head(self.model.backbone(images))[0],)


# meta-architecture -> its exportable wrapper (semantic_only: the wrapper of that choice)
EXPORTABLE_MODELS: dict[type[nn.Module], dict[bool, type[_ExportableBase] | None]] = {
    SemanticSegmentor: {False: ExportableSegmentor, True: ExportableSegmentor},
    UnifiedPerceptualParser: {False: ExportableParser, True: None},
    PanopticFPN: {False: None, True: ExportablePanopticSemantic},
}

_WHY_NOT = {
    (UnifiedPerceptualParser, True): "the unified perceptual parser has no single semantic "
    "branch; it exports every task head (leave out --semantic-only)",
    (PanopticFPN, False): "Panoptic FPN's RPN, RoI heads and panoptic merge do not export (the "
    "numbers of proposals after NMS, of detections and of segments depend on the image); its "
    "semantic branch does: export it with semantic_only=True (tools/export_model.py "
    "--semantic-only)",
}


def exportable_model(model: nn.Module, *, semantic_only: bool = False) -> _ExportableBase:
    """The exportable wrapper of ``model``: it holds an eval-mode copy with exportable pooling
    and NCHW weights (``model`` itself is unchanged). A NotExportableError names what does not
    export and why."""
    kind = type(model)
    if kind not in EXPORTABLE_MODELS:
        raise NotExportableError(
            f"{kind.__name__} has no exportable form; exportable meta-architectures: "
            f"{sorted(k.__name__ for k in EXPORTABLE_MODELS)}"
        )
    wrapper = EXPORTABLE_MODELS[kind][semantic_only]
    if wrapper is None:
        raise NotExportableError(f"{kind.__name__}: {_WHY_NOT[(kind, semantic_only)]}")
    return wrapper(model)
