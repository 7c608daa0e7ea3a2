"""Video-FocalNet: spatio-temporal focal modulation for video action recognition.

Wasim et al., "Video-FocalNets: Spatio-Temporal Focal Modulation for Video Action Recognition"
(ICCV 2023), and its nano student VFL-Net from DVFL-Net (arXiv 2507.12426). The behaviour we must
reproduce is written down in ``../shared/spec/video-focalnet.md``; module and parameter names are
the official ones, so a released checkpoint loads strictly after unwrapping (see ``weights.py``).

Where we knowingly differ from the official code, and why:

- Forward is pure. The official blocks read ``self.H``/``self.W`` set from outside and the
  modulation layer stores ``self.gates``/``self.modulator`` on the module during forward; here the
  spatial size travels as arguments and modulator maps come out only through
  ``forward_features(x, return_modulators=True)``.
- The modulation layer stays channels-last throughout: no ``clone()`` of its input, no
  ``permute().contiguous()`` round trips, the 1x1 convolutions ``h``/``h_temporal`` run as
  ``F.linear`` on their (reshaped) weights, ``f_temporal`` runs as two ``F.linear`` calls on row
  slices of its weight (so the temporal context comes out contiguous), and the dense temporal
  Conv1d over each position's frames runs as a Conv2d with a (k, 1) kernel on the channels-last
  view (B, C, T, H*W), which is the same sum without regrouping the tensor. Same function, same
  parameters, fewer copies; without autograd the MLP's GELU works in place.
- The gamma scale is skipped when layer-scale is off instead of multiplying by the constant 1.0.
- ``use_conv_embed`` with ``tubelet_size > 1`` (no released config combines them) uses a Conv3d
  stem of kernel (tubelet, 7, 7), stride (tubelet, 4, 4), padding (0, 2, 2).
- Activation checkpointing only runs when gradients are being recorded; under ``no_grad`` it
  would only cost time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


# --------------------------------------------------------------------------- layers


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth with one keep/drop decision per row of ``x``.

    Rows are frames (the batch is B*T), so frames of one clip are dropped independently, as in
    the reference implementation.
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


class Mlp(nn.Module):
    def __init__(self, dim: int, *, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        # Without autograd the activation overwrites fc1's output: at stage 0 that tensor is
        # 38 MB per clip, above glibc's mmap threshold, so a second one is page-faulted afresh
        # on every forward (about a fifth of the MLP's time at one thread).
        hidden = self.act(hidden) if torch.is_grad_enabled() else torch.ops.aten.gelu_(hidden)
        return self.drop(self.fc2(self.drop(hidden)))


def _temporal_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The dense Conv1d over time of every position: x is channels-last (B, T, S, D), contiguous.

    As a Conv2d with a (k, 1) kernel on the channels-last view (B, D, T, S) it runs on the
    optimised convolution path at any thread count and returns channels-last again, with no
    regrouping copy. (A Conv3d with a (k, 1, 1) kernel computes the same sum, but PyTorch's CPU
    heuristic sends kernels whose last two sizes are 1 to its slow unfolding path at one thread:
    3-4x the time of this form.)
    """
    out = F.conv2d(x.permute(0, 3, 1, 2), conv.weight[..., None],
                   padding=(conv.padding[0], 0))
    return out.permute(0, 2, 3, 1)


def _gated_sum(acc: torch.Tensor | None, ctx: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """acc + ctx * gate in one pass (addcmul), starting from nothing."""
    return ctx * gate if acc is None else torch.addcmul(acc, ctx, gate)


@dataclass(frozen=True)
class Modulators:
    """What one block's modulation multiplied, channels last, each (B, T, H, W, D): the block's
    output before ``proj`` (and ``ln``) is exactly ``query * spatial * temporal``."""

    stage: int
    block: int
    query: torch.Tensor
    spatial: torch.Tensor
    temporal: torch.Tensor


class SpatioTemporalFocalModulation(nn.Module):
    """Focal modulation with a per-frame spatial branch and a per-position temporal branch.

    Input and output are channels-last (B*T, H, W, D), frame index fastest. The two modulators
    multiply the query: out = proj(q * h(spatial context) * h_temporal(temporal context)).
    """

    def __init__(self, dim: int, *, focal_level: int, focal_window: int, num_frames: int,
                 proj_drop: float = 0.0, use_postln_in_modulation: bool = False,
                 normalize_modulator: bool = False):
        super().__init__()
        self.dim = dim
        self.focal_level = focal_level
        self.focal_window = focal_window
        self.num_frames = num_frames
        self.normalize_modulator = normalize_modulator
        self.use_postln_in_modulation = use_postln_in_modulation

        # Registration order follows the reference so state dicts list keys in the same order.
        kernels = [2 * level + focal_window for level in range(focal_level)]
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False),
                          nn.GELU()) for k in kernels)
        self.f_temporal = nn.Linear(dim, dim + focal_level + 1)
        self.h_temporal = nn.Conv1d(dim, dim, kernel_size=1)
        self.focal_layers_temporal = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, k, padding=k // 2, bias=False), nn.GELU())
            for k in kernels)
        if use_postln_in_modulation:
            self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, *, return_modulators: bool = False):
        n, height, width, dim = x.shape
        frames = self.num_frames
        levels = self.focal_level

        # Spatial branch, per frame. The depthwise convs read the channels-last view directly.
        q, ctx, gates = self.f(x).split((dim, dim, levels + 1), dim=-1)
        ctx = ctx.permute(0, 3, 1, 2)
        acc = None
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            acc = _gated_sum(acc, ctx.permute(0, 2, 3, 1), gates[..., level:level + 1])
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True)).permute(0, 2, 3, 1)
        acc = _gated_sum(acc, ctx_global, gates[..., levels:])

        # Temporal branch, per spatial position across the frames of each clip. A dense Conv1d over
        # time for every position is a Conv2d with a (k, 1) kernel on the channels-last view
        # (B, D, T, H*W) of the contiguous context; see _temporal_conv for why this form.
        weight_t, bias_t = self.f_temporal.weight, self.f_temporal.bias
        grouped = (n // frames, frames, height * width, -1)
        ctx_t = F.linear(x, weight_t[:dim], bias_t[:dim]).view(grouped)
        gates_t = F.linear(x, weight_t[dim:], bias_t[dim:]).view(grouped)
        acc_t = None
        for level, layer in enumerate(self.focal_layers_temporal):
            ctx_t = layer[1](_temporal_conv(ctx_t, layer[0]))
            acc_t = _gated_sum(acc_t, ctx_t, gates_t[..., level:level + 1])
        ctx_t_global = self.act(ctx_t.mean(1, keepdim=True))
        acc_t = _gated_sum(acc_t, ctx_t_global, gates_t[..., levels:])

        if self.normalize_modulator:
            acc = acc / (levels + 1)
            acc_t = acc_t / (levels + 1)
        modulator = F.linear(acc, self.h.weight.view(dim, dim), self.h.bias)
        modulator_t = F.linear(acc_t, self.h_temporal.weight.view(dim, dim),
                               self.h_temporal.bias).view(n, height, width, dim)

        out = q * modulator * modulator_t
        if self.use_postln_in_modulation:
            out = self.ln(out)
        out = self.proj_drop(self.proj(out))
        if return_modulators:
            shape = (n // frames, frames, height, width, dim)
            return out, (q.view(shape), modulator.view(shape), modulator_t.view(shape))
        return out

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, focal_level={self.focal_level}, "
                f"focal_window={self.focal_window}, num_frames={self.num_frames}")


class PatchEmbed(nn.Module):
    """Strided convolution to tokens, then LayerNorm: the stem and every downsampling.

    The stem takes (B, T, C, H, W) and returns (B*T', H'*W', D) with T' = T / tubelet_size;
    a downsampling layer takes channels-last tokens (B*T, H, W, C) and returns (B*T, H'*W', D).
    """

    def __init__(self, in_chans: int, embed_dim: int, *, kernel: int, stride: int,
                 padding: int = 0, norm: bool = True, tubelet_size: int = 1):
        super().__init__()
        self.tubelet_size = tubelet_size
        if tubelet_size > 1:
            self.proj = nn.Conv3d(in_chans, embed_dim, (tubelet_size, kernel, kernel),
                                  stride=(tubelet_size, stride, stride),
                                  padding=(0, padding, padding))
        else:
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if x.ndim == 5:  # stem on clips
            b, t = x.shape[:2]
            if self.tubelet_size > 1:
                x = self.proj(x.transpose(1, 2))  # (B, D, T', H', W')
                x = x.permute(0, 2, 3, 4, 1).flatten(0, 1)  # (B*T', H', W', D)
            else:
                x = self.proj(x.reshape(b * t, *x.shape[2:])).permute(0, 2, 3, 1)
        else:  # downsampling on channels-last tokens
            x = self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        height, width = x.shape[1], x.shape[2]
        x = x.reshape(x.shape[0], height * width, x.shape[3])
        if self.norm is not None:
            x = self.norm(x)
        return x, height, width


# --------------------------------------------------------------------------- blocks


class FocalModulationBlock(nn.Module):
    """Pre-norm (or post-norm) residual block: modulation, then MLP, each with drop-path."""

    def __init__(self, dim: int, *, focal_level: int, focal_window: int, num_frames: int,
                 mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 use_layerscale: bool = False, layerscale_value: float = 1e-4,
                 use_postln: bool = False, use_postln_in_modulation: bool = False,
                 normalize_modulator: bool = False):
        super().__init__()
        self.use_postln = use_postln
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = SpatioTemporalFocalModulation(
            dim, focal_level=focal_level, focal_window=focal_window, num_frames=num_frames,
            proj_drop=drop, use_postln_in_modulation=use_postln_in_modulation,
            normalize_modulator=normalize_modulator)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden=int(dim * mlp_ratio), drop=drop)
        if use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(layerscale_value)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, height: int, width: int,
                return_modulators: bool = False):
        n, tokens, dim = x.shape
        y = x if self.use_postln else self.norm1(x)
        y = self.modulation(y.reshape(n, height, width, dim),
                            return_modulators=return_modulators)
        if return_modulators:
            y, maps = y
        y = y.reshape(n, tokens, dim)
        if self.use_postln:
            y = self.norm1(y)
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        x = x + self.drop_path(y)

        z = self.norm2(self.mlp(x)) if self.use_postln else self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            z = self.gamma_2 * z
        x = x + self.drop_path(z)
        return (x, maps) if return_modulators else x


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks at one width, then optional downsampling."""

    def __init__(self, dim: int, *, depth: int, out_dim: int | None, drop_path: Sequence[float],
                 use_checkpoint: bool = False, use_conv_embed: bool = False, **block_kwargs):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            FocalModulationBlock(dim, drop_path=drop_path[j], **block_kwargs) for j in range(depth))
        if out_dim is None:
            self.downsample = None
        elif use_conv_embed:
            self.downsample = PatchEmbed(dim, out_dim, kernel=3, stride=2, padding=1)
        else:
            self.downsample = PatchEmbed(dim, out_dim, kernel=2, stride=2)

    def forward(self, x: torch.Tensor, height: int, width: int,
                modulators: list[tuple[int, torch.Tensor, ...]] | None = None):
        """Blocks then downsampling; with a ``modulators`` list, appends (block, query, spatial,
        temporal) maps to it (the caller's list, not module state)."""
        want_maps = modulators is not None
        for j, block in enumerate(self.blocks):
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, height, width, want_maps,
                                                      use_reentrant=False)
            else:
                x = block(x, height, width, want_maps)
            if want_maps:
                x, (query, spatial, temporal) = x
                modulators.append((j, query, spatial, temporal))
        if self.downsample is not None:
            x, height, width = self.downsample(x.reshape(x.shape[0], height, width, x.shape[2]))
        return x, height, width


# --------------------------------------------------------------------------- network


class VideoFocalNet(nn.Module):
    """Video-FocalNet on clips (B, T, C, H, W); every layer is per frame except the temporal
    branch of each modulation layer. Options and their names are the reference ones."""

    def __init__(self, *, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.1, patch_norm: bool = True,
                 use_checkpoint: bool = False, focal_levels: Sequence[int] = (2, 2, 2, 2),
                 focal_windows: Sequence[int] = (3, 3, 3, 3), use_conv_embed: bool = False,
                 use_layerscale: bool = False, layerscale_value: float = 1e-4,
                 use_postln: bool = False, use_postln_in_modulation: bool = False,
                 normalize_modulator: bool = False, num_frames: int = 8, tubelet_size: int = 1):
        super().__init__()
        depths, focal_levels, focal_windows = list(depths), list(focal_levels), list(focal_windows)
        if not (len(depths) == len(focal_levels) == len(focal_windows)) or not depths:
            raise ValueError(f"depths, focal_levels and focal_windows need one entry per stage, "
                             f"got {depths}, {focal_levels}, {focal_windows}")
        if tubelet_size < 1 or num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not a multiple of "
                             f"tubelet_size={tubelet_size}")
        self.config = dict(
            img_size=int(img_size), patch_size=int(patch_size), in_chans=int(in_chans),
            num_classes=int(num_classes), embed_dim=int(embed_dim), depths=depths,
            mlp_ratio=float(mlp_ratio), drop_rate=float(drop_rate),
            drop_path_rate=float(drop_path_rate), patch_norm=bool(patch_norm),
            use_checkpoint=bool(use_checkpoint), focal_levels=focal_levels,
            focal_windows=focal_windows, use_conv_embed=bool(use_conv_embed),
            use_layerscale=bool(use_layerscale), layerscale_value=float(layerscale_value),
            use_postln=bool(use_postln), use_postln_in_modulation=bool(use_postln_in_modulation),
            normalize_modulator=bool(normalize_modulator), num_frames=int(num_frames),
            tubelet_size=int(tubelet_size))
        self.arch: str | None = None
        self.num_classes = int(num_classes)
        self.num_frames = int(num_frames)
        self.in_chans = int(in_chans)
        self.num_layers = len(depths)
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))

        if use_conv_embed:
            self.patch_embed = PatchEmbed(in_chans, embed_dim, kernel=7, stride=4, padding=2,
                                          norm=patch_norm, tubelet_size=tubelet_size)
        else:
            self.patch_embed = PatchEmbed(in_chans, embed_dim, kernel=patch_size,
                                          stride=patch_size, norm=patch_norm,
                                          tubelet_size=tubelet_size)
        self.pos_drop = nn.Dropout(drop_rate)

        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            dim = embed_dim * 2 ** i
            last = i == self.num_layers - 1
            self.layers.append(BasicLayer(
                dim, depth=depth, out_dim=None if last else 2 * dim,
                drop_path=rates[sum(depths[:i]):sum(depths[:i + 1])],
                use_checkpoint=use_checkpoint, use_conv_embed=use_conv_embed,
                focal_level=focal_levels[i], focal_window=focal_windows[i],
                num_frames=num_frames // tubelet_size, mlp_ratio=mlp_ratio, drop=drop_rate,
                use_layerscale=use_layerscale, layerscale_value=layerscale_value,
                use_postln=use_postln, use_postln_in_modulation=use_postln_in_modulation,
                normalize_modulator=normalize_modulator))
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.num_frames or x.shape[2] != self.in_chans:
            raise ValueError(f"expected clips (B, {self.num_frames}, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor, *, return_modulators: bool = False):
        """Pooled pre-logit embedding (B, num_features): final norm, token mean, frame mean.

        With ``return_modulators`` also returns one ``Modulators`` per block, in order (query and
        both modulators, so a caller can check they are what the block used), for the paper's
        modulator visualisations; the normal path does no extra work.
        """
        self._check_input(x)
        batch = x.shape[0]
        x, height, width = self.patch_embed(x)
        x = self.pos_drop(x)
        maps: list[Modulators] | None = [] if return_modulators else None
        for i, layer in enumerate(self.layers):
            stage_maps = [] if return_modulators else None
            x, height, width = layer(x, height, width, stage_maps)
            if return_modulators:
                maps.extend(Modulators(i, j, q, s, t) for j, q, s, t in stage_maps)
        x = self.norm(x).mean(1)
        x = x.view(batch, -1, x.shape[-1]).mean(1)
        return (x, maps) if return_modulators else x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- init


def _init_weights(module: nn.Module) -> None:
    """Reference init: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0); convolutions
    keep PyTorch's default."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
