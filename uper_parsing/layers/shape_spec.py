from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a feature map: channels and stride relative to the input image."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
