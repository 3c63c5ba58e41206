"""Parameter counts and FLOPs of a model built from a config.

    python tools/analyze_model.py --config-file X.yaml [--flops --input-size H W] [KEY VALUE ...]

Options come before the KEY VALUE overrides.
"""

from __future__ import annotations

import argparse
import logging
import warnings

import torch
from torch import nn

from uper_parsing.config import get_cfg
from uper_parsing.data.datasets import register_declared_datasets
from uper_parsing.modeling import build_model
from uper_parsing.tasks import configure_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--config-file", default="", help="YAML config (default: built-in defaults)"
    )
    parser.add_argument("--flops", action="store_true", help="also count FLOPs with fvcore")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=[512, 512],
        metavar=("H", "W"),
        help="image size for --flops",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def parameter_report(model: nn.Module) -> list[str]:
    """Lines: total and trainable parameters, then one line per top-level module."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = [f"parameters: {total:,} total, {trainable:,} trainable"]
    for name, child in model.named_children():
        count = sum(p.numel() for p in child.parameters())
        lines.append(f"  {name:<16} {count:>14,}  ({100 * count / max(total, 1):.1f}%)")
    return lines


class _ImageToOutputs(nn.Module):
    """Traceable wrapper: an image tensor (3, H, W) in, the tensors of the model's output dict
    for it out (``sem_seg``; a multi-task parser's ``object`` ... ``texture``), sorted by key."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = image.shape[-2:]
        outputs = self.model([{"image": image, "height": height, "width": width}])[0]
        tensors = tuple(v for _, v in sorted(outputs.items()) if isinstance(v, torch.Tensor))
        if not tensors:
            raise ValueError(f"the model's outputs {sorted(outputs)} hold no tensor to trace")
        return tensors


def count_flops(model: nn.Module, height: int, width: int) -> tuple[int, dict[str, int]]:
    """fvcore's count (one fused multiply-add = one flop) of the model's inference on one
    (height, width) image: the total and the count of every submodule by name (``model.`` +
    the model's own names). The model is left in eval mode."""
    with warnings.catch_warnings():  # fvcore.nn scripts a function on import (deprecated API)
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    image = torch.zeros(3, height, width, device=next(model.parameters()).device)
    analysis = FlopCountAnalysis(_ImageToOutputs(model).eval(), (image,))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis.total(), analysis.by_module()


def flop_report(model: nn.Module, height: int, width: int) -> list[str]:
    """Lines: total GFLOPs (fvcore counts one fused multiply-add as one flop) and per module."""
    total, by_module = count_flops(model, height, width)
    lines = [f"flops at {height}x{width}: {total / 1e9:.2f} G"]
    for name, _ in model.named_children():
        lines.append(f"  {name:<16} {by_module.get(f'model.{name}', 0) / 1e9:>10.2f} G")
    return lines


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.BACKBONE.PRETRAINED = ""  # counts and FLOPs need no ImageNet weights (or download)
    cfg.freeze()
    register_declared_datasets(cfg)
    configure_model(cfg, check=False)  # class counts a parser takes from its datasets' metadata
    model = build_model(cfg).eval()
    lines = parameter_report(model)
    if args.flops:
        with torch.no_grad():
            lines += flop_report(model, *args.input_size)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
