"""Pyramid Pooling Module (PSPNet), shared by PSPHead and UPerNetHead, and the precise RoI pooling
(PrRoIPool) over a whole map that CSAIL's unified-parsing UPerNet pools with."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from ...layers import ConvNormAct, resize_to

__all__ = ["PPM", "PPM_POOLS", "PrRoIPool2d", "prroi_pool_matrix", "prroi_pool_weights"]


def _hat_integral(t: torch.Tensor) -> torch.Tensor:
    """Integral from -inf to t of the hat function max(0, 1 - |s|) ds."""
    t = t.clamp(-1.0, 1.0)
    return torch.where(t < 0, 0.5 * (t + 1) ** 2, 1 - 0.5 * (1 - t) ** 2)


def prroi_pool_matrix(
    length: int | torch.SymInt | torch.Tensor,
    bins: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Weights of PrRoIPool along one axis of ``length`` pixels pooled into ``bins`` bins over
    the whole axis, as CSAIL's PrRoIPool2D with the RoI (0, 0, W, H) does.

    PrRoIPool places pixel i at coordinate i, interpolates bilinearly (the hat function centred
    at i) with zeros outside the map, and averages that function exactly over bin b =
    [b * length / bins, (b + 1) * length / bins]. So the RoI [0, length] is half a pixel to the
    right of the pixels' extent [-0.5, length - 0.5], and the last bin loses the half pixel of
    zeros past the last pixel centre (its weights sum to 1 - 0.5 * bins / length).

    Args:
        length: a Python int, or a traced size (``torch.export``'s SymInt, the 0-d tensor of
            ``torch.jit.trace``): the matrix is built with tensor ops only, so it stays dynamic.

    Returns:
        Tensor (bins, length) in ``dtype``: the weight of pixel i in bin b.
    """
    size = length / bins
    edges = torch.arange(bins + 1, dtype=dtype, device=device) * size
    centres = torch.arange(length, dtype=dtype, device=device)
    integral = _hat_integral(edges[1:, None] - centres) - _hat_integral(edges[:-1, None] - centres)
    return integral / size


@functools.lru_cache(maxsize=64)
def prroi_pool_weights(length: int, bins: int) -> torch.Tensor:
    """:func:`prroi_pool_matrix` (float64, CPU) cached per (length, bins).

    Returns:
        Tensor (bins, length) float64: the weight of pixel i in bin b.
    """
    return prroi_pool_matrix(length, bins)


class PrRoIPool2d(nn.Module):
    """Precise RoI pooling of the whole map into ``output_size`` bins: a separable linear map,
    ``W_h @ x @ W_w^T`` with the weights of :func:`prroi_pool_weights`."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = (
            (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, H, W). Returns: Tensor (N, C, *output_size)."""
        (height, width), (bins_h, bins_w) = x.shape[-2:], self.output_size
        rows = prroi_pool_weights(int(height), bins_h).to(x.device, x.dtype)
        cols = prroi_pool_weights(int(width), bins_w).to(x.device, x.dtype)
        return rows @ x @ cols.T

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


# MODEL.SEM_SEG_HEAD.PPM_POOL -> the pooling of each pyramid bin (called with the bin count)
PPM_POOLS: dict[str, type[nn.Module]] = {"avg": nn.AdaptiveAvgPool2d, "prroi": PrRoIPool2d}


class PPM(nn.Module):
    """For each bin b: pool to b x b, 1x1 ConvNormAct, resize back to the input size; the results
    are concatenated after the input. With ``conv_after_upsample`` the ConvNormAct runs on the
    resized map instead (CSAIL's UPerNet decoder; same parameters).

    With a BatchNorm, the 1x1 bin needs more than one image per (Sync)BN batch while training.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "BN",
        conv_after_upsample: bool = False,
        pool: str = "avg",
    ) -> None:
        """
        Args:
            pool: "avg" (adaptive average pooling) or "prroi" (:class:`PrRoIPool2d`, CSAIL's
                unified-parsing UPerNet).
        """
        super().__init__()
        if pool not in PPM_POOLS:
            raise ValueError(f"PPM pool '{pool}' is not one of {sorted(PPM_POOLS)}")
        self.conv_after_upsample = conv_after_upsample
        self.branches = nn.ModuleList(
            nn.Sequential(PPM_POOLS[pool](scale), ConvNormAct(in_channels, channels, 1, norm=norm))
            for scale in pool_scales
        )
        self.out_channels = in_channels + len(pool_scales) * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, h, w). Returns: Tensor (N, C + len(pool_scales) * channels, h, w)."""
        size = x.shape[-2:]
        return torch.cat([x, *(self._branch(pool_conv, x, size) for pool_conv in self.branches)], 1)

    def _branch(self, pool_conv: nn.Sequential, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        pool, conv = pool_conv
        if self.conv_after_upsample:
            return conv(resize_to(pool(x), size))
        return resize_to(conv(pool(x)), size)
