"""A deliberately plain eager transcription of the spec: the modulation layer and the network.

Why it exists: it is the oracle the tests compare the channels-last fast path against (including
the options the parity file does not exercise), and the baseline ``tools/bench_models.py`` times
our forward against (the "reference-style" forward, since the published code may not be shipped).
It follows the spec line by line, regrouping tensors the obvious way (channels-first copies,
(B*H*W, C, T) for the temporal Conv1d, tokens transposed back to (N, C, H, W) before each
downsampling), and uses the parameters of our modules, so it needs no weight conversion.
"""

from __future__ import annotations

import types

import torch

from dvfl_cache.models.video_focalnet import (FocalModulationBlock, SpatioTemporalFocalModulation,
                                              VideoFocalNet)


def reference_modulation(mod: SpatioTemporalFocalModulation, x: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out, query, spatial modulator, temporal modulator); x and out are (B*T, H, W, D),
    the others (B, T, H, W, D) like ``forward(..., return_modulators=True)``."""
    n, height, width, dim = x.shape
    frames, levels = mod.num_frames, mod.focal_level
    batch = n // frames

    y = mod.f(x).permute(0, 3, 1, 2).contiguous()
    q, ctx, gates = torch.split(y, (dim, dim, levels + 1), 1)
    acc = 0
    for level in range(levels):
        ctx = mod.focal_layers[level](ctx)
        acc = acc + ctx * gates[:, level:level + 1]
    acc = acc + mod.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True)) * gates[:, levels:]

    xt = x.clone().reshape(batch, frames, height, width, dim).permute(0, 2, 3, 1, 4)
    xt = xt.reshape(batch * height * width, frames, dim)
    yt = mod.f_temporal(xt).permute(0, 2, 1).contiguous()
    ctx_t, gates_t = torch.split(yt, (dim, levels + 1), 1)
    acc_t = 0
    for level in range(levels):
        ctx_t = mod.focal_layers_temporal[level](ctx_t)
        acc_t = acc_t + ctx_t * gates_t[:, level:level + 1]
    acc_t = acc_t + mod.act(ctx_t.mean(2, keepdim=True)) * gates_t[:, levels:]

    if mod.normalize_modulator:
        acc = acc / (levels + 1)
        acc_t = acc_t / (levels + 1)
    modulator = mod.h(acc)  # (B*T, D, H, W)
    modulator_t = mod.h_temporal(acc_t)  # (B*H*W, D, T)
    modulator_t = modulator_t.reshape(batch, height, width, dim, frames).permute(0, 4, 3, 1, 2)
    modulator_t = modulator_t.reshape(n, dim, height, width)

    out = (q * modulator * modulator_t).permute(0, 2, 3, 1).contiguous()
    if mod.use_postln_in_modulation:
        out = mod.ln(out)
    out = mod.proj_drop(mod.proj(out))
    shape = (batch, frames, height, width, dim)
    return (out, q.permute(0, 2, 3, 1).reshape(shape),
            modulator.permute(0, 2, 3, 1).reshape(shape),
            modulator_t.permute(0, 2, 3, 1).reshape(shape))


def plain_forward(model: VideoFocalNet, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) on clips (B, T, C, H, W), by the spec's data flow."""
    if model.training:
        raise ValueError("plain_forward follows the eval-mode network (no dropout, no drop-path)")
    model._check_input(x)
    batch = x.shape[0]
    stem = model.patch_embed
    if stem.tubelet_size > 1:
        y = stem.proj(x.transpose(1, 2))  # (B, D, T', H', W')
        y = y.transpose(1, 2).flatten(0, 1)
    else:
        y = stem.proj(x.flatten(0, 1))  # (B*T, D, H', W')
    height, width = y.shape[2:]
    y = y.flatten(2).transpose(1, 2)
    if stem.norm is not None:
        y = stem.norm(y)
    for layer in model.layers:
        for block in layer.blocks:
            y = _plain_block(block, y, height, width)
        if layer.downsample is not None:
            y = y.transpose(1, 2).reshape(y.shape[0], -1, height, width)
            y = layer.downsample.proj(y)
            height, width = y.shape[2:]
            y = layer.downsample.norm(y.flatten(2).transpose(1, 2))
    y = model.norm(y).mean(1)
    y = y.reshape(batch, -1, y.shape[-1]).mean(1)
    return model.head(y)


def _plain_block(block: FocalModulationBlock, x: torch.Tensor, height: int, width: int
                 ) -> torch.Tensor:
    n, tokens, dim = x.shape
    shortcut = x
    y = x if block.use_postln else block.norm1(x)
    y = reference_modulation(block.modulation, y.view(n, height, width, dim))[0]
    y = y.view(n, tokens, dim)
    if block.use_postln:
        y = block.norm1(y)
    gamma_1 = 1.0 if block.gamma_1 is None else block.gamma_1
    gamma_2 = 1.0 if block.gamma_2 is None else block.gamma_2
    x = shortcut + gamma_1 * y
    z = block.norm2(block.mlp(x)) if block.use_postln else block.mlp(block.norm2(x))
    return x + gamma_2 * z


def use_reference_modulation(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every modulation layer of ``model`` (in place) to ``reference_modulation``; for
    benchmarks. Returns the model."""
    for module in model.modules():
        if isinstance(module, SpatioTemporalFocalModulation):
            module.forward = types.MethodType(_reference_forward, module)
    return model


def _reference_forward(mod: SpatioTemporalFocalModulation, x: torch.Tensor, *,
                       return_modulators: bool = False):
    out, query, spatial, temporal = reference_modulation(mod, x)
    return (out, (query, spatial, temporal)) if return_modulators else out
