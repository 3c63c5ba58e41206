"""Swin Transformer backbone: mmsegmentation's numerics with timm 1.0's parameter names.

The published Swin UPerNets (mmsegmentation's, and transformers' ``UperNetForSemanticSegmentation``
converted from them) were trained with mmseg's ``SwinTransformer``, so its forward is the spec:

- patch embedding: the image padded right / bottom to a multiple of the patch size, a
  patch-size conv, optional LayerNorm; absolute position embedding optional (APE);
- each block: ``norm1``, the map padded right / bottom to a multiple of the window, THEN the
  cyclic shift by ``window // 2`` (odd blocks), window attention with the relative position bias
  and, when shifted, the mask of the padded map (-100 between tokens of different regions), the
  shift reversed, the padding cropped, residual; ``norm2`` + MLP (GELU) residual; drop path on
  both branches, its rate linear over all blocks;
- patch merging at the start of stages 1.. pads odd maps right / bottom;
- every returned stage goes through its own LayerNorm (``norms.resK``), a side branch: the next
  stage's patch merging reads the un-normed map.

timm's ``SwinTransformer`` cannot stand in for it: it shifts BEFORE padding (the windows and the
mask then cover other tokens wherever a map is not a multiple of the window) and sizes its windows
and masks from a fixed ``img_size``, shrinking the window of any stage whose map is not larger than
it. mmseg never shrinks a window, also when a map is smaller than the window (it pads the map up to
one window); we follow mmseg. (transformers' ``SwinModel`` shrinks such windows by default; its
``SwinBackbone`` passes ``always_partition=True`` and matches mmseg.)

Parameter names are timm 1.0's, so timm's ImageNet Swin weights load by name: ``patch_embed.*``,
``layers.{i}.downsample.{norm,reduction}`` (the merging into stage i, i >= 1, input channel order
[x(0::2, 0::2), x(1::2, 0::2), x(0::2, 1::2), x(1::2, 1::2)]), ``layers.{i}.blocks.{j}.{norm1,
attn.qkv, attn.relative_position_bias_table, attn.proj, norm2, mlp.fc1, mlp.fc2}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_
from torchvision.ops import StochasticDepth

from ...checkpoint.formats import load_backbone_weights
from ...config import configurable
from ...layers import ShapeSpec
from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["SwinTransformer", "build_swin_backbone", "shifted_window_mask"]

_MASK_VALUE = -100.0  # mmseg's / the original Swin's attention mask between shifted regions


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """x: (N, H, W, C), H and W multiples of ``window``. Returns (N * nW, window^2, C), the
    windows of each image in row-major order."""
    N, H, W, C = x.shape
    x = x.view(N, H // window, window, W // window, window, C).transpose(2, 3)
    return x.reshape(-1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """windows: (N * nW, window^2, C) from :func:`window_partition`. Returns (N, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, C).transpose(2, 3)
    return x.reshape(-1, height, width, C)


def _shift_regions(length: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region of each position along an axis of a shifted map: 0 before ``length - window``,
    1 before ``length - shift``, 2 after."""
    idx = torch.arange(length, device=device)
    return (idx >= length - window).long() + (idx >= length - shift).long()


def shifted_window_mask(
    height: int, width: int, window: int, shift: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Attention mask of shifted windows over a padded (height, width) map, both multiples of
    ``window``: 0 between tokens of one region of the rolled map, -100 between regions.
    Returns Tensor (nW, window^2, window^2)."""
    rows = _shift_regions(height, window, shift, device)
    cols = _shift_regions(width, window, shift, device)
    regions = (rows[:, None] * 3 + cols[None, :]).view(1, height, width, 1)
    regions = window_partition(regions, window).squeeze(-1)  # (nW, window^2)
    different = regions[:, None, :] != regions[:, :, None]
    return torch.zeros(different.shape, dtype=dtype, device=device).masked_fill(
        different, _MASK_VALUE
    )


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the ((2w-1)^2, heads) bias table of each (query, key) pair of a window: the
    row offset times (2w - 1) plus the column offset, both shifted to start at 0.
    Returns Tensor (w^2, w^2) long."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # (2, w^2)
    offsets = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # (2, w^2, w^2)
    return offsets[0] * (2 * window - 1) + offsets[1]


class PatchEmbed(nn.Module):
    """Non-overlapping patches: input padded right / bottom to a multiple of ``patch_size``,
    a conv of kernel = stride = ``patch_size``, then an optional LayerNorm."""

    def __init__(self, *, in_channels: int, embed_dim: int, patch_size: int, norm: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W). Returns (N, ceil(H / p), ceil(W / p), C) channels-last."""
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[-1] % p, 0, -x.shape[-2] % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2 x 2 neighbours concatenated (odd maps padded right / bottom), LayerNorm, Linear 4C->2C."""

    def __init__(self, *, in_channels: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels) if norm else nn.Identity()
        self.reduction = nn.Linear(4 * in_channels, 2 * in_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, H, W, C). Returns (N, ceil(H / 2), ceil(W / 2), 2C)."""
        N, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = x.view(N, (H + 1) // 2, 2, (W + 1) // 2, 2, C)
        x = x.permute(0, 1, 3, 4, 2, 5).flatten(3)  # channels [(0,0), (1,0), (0,1), (1,1)] x C
        return self.reduction(self.norm(x))


class Mlp(nn.Module):
    """Linear C -> hidden, GELU (exact), Linear hidden -> C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C). Returns (..., C)."""
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, *, dim: int, num_heads: int, window_size: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )

    def relative_position_bias(self) -> torch.Tensor:
        """Returns Tensor (heads, w^2, w^2)."""
        area = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(area, area, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N * nW, w^2, C); mask: (nW, w^2, w^2) added to the logits, or None.
        Returns (N * nW, w^2, C)."""
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias().unsqueeze(0)  # (1, heads, L, L)
        if mask is not None:
            windows = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).repeat(B // windows, 1, 1, 1)  # (B, heads, L, L)
        # the default scale head_dim^-0.5 is mmseg's; bias + mask are added to the logits
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(B, L, C))


class SwinBlock(nn.Module):
    """norm1 -> (shifted) window attention -> residual; norm2 -> MLP -> residual."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim=dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias
        )
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # per-image drop of a residual branch, survivors scaled by 1 / (1 - p) (mmcv's DropPath)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (N, H, W, C); mask: :func:`shifted_window_mask` of the padded map (used when this
        block shifts). Returns (N, H, W, C)."""
        x = x + self.drop_path(self._window_attention(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _window_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Pad to the window, THEN shift (mmseg's order), attend, unshift, crop."""
        _, H, W, _ = x.shape
        w, s = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, -W % w, 0, -H % w))
        Hp, Wp = x.shape[1:3]
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        x = self.attn(window_partition(x, w), mask if s else None)
        x = window_reverse(x, w, Hp, Wp)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x[:, :H, :W]


class SwinStage(nn.Module):
    """Patch merging (stages after the first), then blocks alternating plain / shifted windows."""

    def __init__(
        self,
        *,
        in_channels: int,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: Sequence[float],
        downsample: bool,
        patch_norm: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.downsample = (
            PatchMerging(in_channels=in_channels, norm=patch_norm) if downsample else nn.Identity()
        )
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift=j % 2 == 1,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path[j],
            )
            for j in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, H, W, C_in). Returns (N, H', W', C) (H' = ceil(H / 2) after a merging)."""
        x = self.downsample(x)
        w = self.window_size
        _, H, W, _ = x.shape
        mask = None
        if len(self.blocks) > 1:  # one mask per stage: every shifted block pads the same way
            Hp, Wp = H + (-H % w), W + (-W % w)
            mask = shifted_window_mask(Hp, Wp, w, w // 2, dtype=x.dtype, device=x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x


class SwinTransformer(Backbone):
    """Swin Transformer returning stages ``res2..res5`` (patch 4: strides 4..32, channels
    C, 2C, 4C, 8C), NCHW, each through its LayerNorm ``norms.resK``.

    Any input size works (padding inside, as mmseg); outputs are ``ceil(H / stride)``. Stages
    after the deepest requested output are not built.
    """

    @configurable
    def __init__(
        self,
        *,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.3,
        ape: bool = False,
        patch_norm: bool = True,
        out_features: Sequence[str] | None = None,
        freeze_at: int = 0,
        pretrained: str = "",
        in_channels: int = 3,
        pretrain_img_size: int = 224,
    ) -> None:
        """
        Args:
            patch_size: stride of the patch embedding (a power of two).
            embed_dim: channels C of the first stage (doubled by each patch merging).
            depths, num_heads: blocks and attention heads of each stage.
            window_size: attention window (tokens per side), never shrunk.
            mlp_ratio: MLP hidden width / channels.
            qkv_bias: bias in the query / key / value projection.
            drop_path_rate: stochastic depth of the last block, linear from 0 over all blocks.
            ape: absolute position embedding (``absolute_pos_embed``, (1, L, C) over the
                ``pretrain_img_size`` patch grid, bicubically resized to other grids).
            patch_norm: LayerNorm after the patch embedding and in each patch merging.
            out_features: stages returned, a subset of the stage names (res2..res5 for patch 4);
                None = every stage.
            freeze_at: 0 trains everything; 1 freezes the patch embedding (and APE), k > 1 also
                the first k - 1 stages with their output norms (mmseg's ``frozen_stages`` k - 1).
            pretrained: local file of timm Swin weights ("" = random init), see
                :meth:`load_pretrained_weights`.
            in_channels: channels of the input image.
            pretrain_img_size: image size of the APE grid (used only with ``ape``).
        """
        super().__init__()
        names = _stage_names(patch_size, len(depths))
        out_features = names if out_features is None else out_features
        _check_args(names, depths, num_heads, embed_dim, out_features)
        self.patch_embed = PatchEmbed(
            in_channels=in_channels, embed_dim=embed_dim, patch_size=patch_size, norm=patch_norm
        )
        grid = pretrain_img_size // patch_size
        self.absolute_pos_embed = (
            nn.Parameter(trunc_normal_(torch.zeros(1, grid * grid, embed_dim), std=0.02))
            if ape
            else None
        )
        self.stage_names = names[: max(names.index(f) for f in out_features) + 1]
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList(
            SwinStage(
                in_channels=embed_dim * 2 ** max(i - 1, 0),
                dim=embed_dim * 2**i,
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                downsample=i > 0,
                patch_norm=patch_norm,
            )
            for i in range(len(self.stage_names))
        )
        self._out_features = [n for n in self.stage_names if n in out_features]  # stage order
        self._out_feature_channels = {n: embed_dim * 2**i for i, n in enumerate(self.stage_names)}
        self._out_feature_strides = {n: patch_size * 2**i for i, n in enumerate(self.stage_names)}
        self.norms = nn.ModuleDict(
            {n: nn.LayerNorm(self._out_feature_channels[n]) for n in self._out_features}
        )
        self.apply(_init_linear)
        if pretrained:
            self.load_pretrained_weights(pretrained)
        self.frozen_modules: list[nn.Module] = []
        self.freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        swin = cfg.MODEL.SWIN
        return {
            "patch_size": swin.PATCH_SIZE,
            "embed_dim": swin.EMBED_DIM,
            "depths": swin.DEPTHS,
            "num_heads": swin.NUM_HEADS,
            "window_size": swin.WINDOW_SIZE,
            "mlp_ratio": swin.MLP_RATIO,
            "qkv_bias": swin.QKV_BIAS,
            "drop_path_rate": swin.DROP_PATH_RATE,
            "ape": swin.APE,
            "patch_norm": swin.PATCH_NORM,
            "out_features": swin.OUT_FEATURES,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "pretrained": cfg.MODEL.BACKBONE.PRETRAINED,
            "in_channels": input_shape.channels,
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: Tensor (N, C, H, W). Returns {"resK": Tensor (N, C_k, ceil(H/2^k), ceil(W/2^k))}."""
        x = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            x = x + self._position_embedding(*x.shape[1:3])
        outputs = {}
        for name, stage in zip(self.stage_names, self.layers):
            x = stage(x)
            if name in self.norms:
                outputs[name] = self.norms[name](x).permute(0, 3, 1, 2).contiguous()
        return outputs

    def _position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The APE as (1, height, width, C), bicubically resized when the grid differs."""
        _, L, C = self.absolute_pos_embed.shape
        grid = math.isqrt(L)
        pos = self.absolute_pos_embed.view(1, grid, grid, C)
        if (height, width) == (grid, grid):
            return pos
        pos = F.interpolate(
            pos.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False
        )
        return pos.permute(0, 2, 3, 1)

    def freeze(self, freeze_at: int) -> SwinTransformer:
        """Freeze the patch embedding and APE (freeze_at >= 1) and stages 1..freeze_at - 1 with
        their output norms: no gradients, and kept in eval mode by :meth:`train` (no drop path),
        as mmseg's ``frozen_stages``. Returns self."""
        if not 0 <= freeze_at <= len(self.layers) + 1:
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_AT must be in [0, {len(self.layers) + 1}] for this Swin "
                f"(patch embedding + {len(self.layers)} stages), got {freeze_at}"
            )
        groups = [[self.patch_embed]] + [
            [stage, *([self.norms[n]] if n in self.norms else [])]
            for n, stage in zip(self.stage_names, self.layers)
        ]
        for module in (m for group in groups[:freeze_at] for m in group):
            module.requires_grad_(False)
            self.frozen_modules.append(module)
        if freeze_at >= 1 and self.absolute_pos_embed is not None:
            self.absolute_pos_embed.requires_grad_(False)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> SwinTransformer:
        super().train(mode)
        for module in self.frozen_modules:
            module.eval()
        return self

    def load_pretrained_weights(self, weights: str | Mapping[str, torch.Tensor]) -> None:
        """Load ``MODEL.BACKBONE.PRETRAINED`` (a path or URL, or a state dict) through
        ``checkpoint.load_backbone_weights``: timm's, Microsoft's original, mmseg's and converted
        Swin files are recognised. The output norms ``norms.*`` (which classifiers lack) keep
        their initial values; other missing, unexpected and shape-mismatched tensors (a bias
        table of another window size) are logged by module.
        """
        load_backbone_weights(self, weights)


def _init_linear(module: nn.Module) -> None:
    """timm's / mmseg's Swin init: Linear weights truncated normal (std 0.02), biases 0."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _stage_names(patch_size: int, num_stages: int) -> list[str]:
    if patch_size < 1 or patch_size & (patch_size - 1):
        raise ValueError(f"MODEL.SWIN.PATCH_SIZE must be a power of two, got {patch_size}")
    first = int(math.log2(patch_size))
    return [f"res{first + i}" for i in range(num_stages)]


def _check_args(
    names: Sequence[str],
    depths: Sequence[int],
    num_heads: Sequence[int],
    embed_dim: int,
    out_features: Sequence[str],
) -> None:
    if len(depths) != len(num_heads) or not depths:
        raise ValueError(
            f"MODEL.SWIN.DEPTHS {list(depths)} and NUM_HEADS {list(num_heads)} need one entry "
            f"per stage"
        )
    for i, heads in enumerate(num_heads):
        if (embed_dim * 2**i) % heads:
            raise ValueError(
                f"MODEL.SWIN.NUM_HEADS[{i}] = {heads} does not divide the {embed_dim * 2**i} "
                f"channels of stage {i} (EMBED_DIM {embed_dim})"
            )
    unknown = [f for f in out_features if f not in names]
    if unknown or not out_features:
        raise ValueError(
            f"MODEL.SWIN.OUT_FEATURES must be a non-empty subset of {names}, "
            f"got {list(out_features)}"
        )


@BACKBONE_REGISTRY.register()
def build_swin_backbone(cfg, input_shape: ShapeSpec) -> SwinTransformer:
    """Swin Transformer from ``MODEL.SWIN`` and ``MODEL.BACKBONE`` (freeze_at, pretrained)."""
    return SwinTransformer(cfg, input_shape)
