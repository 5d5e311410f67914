"""Multi-head self-attention over the last two dims of (..., N, D), with an optional learned
relative position bias (Swin, Swin V2, MaxViT) and an optional additive mask input.

Parameters carry nn.MultiheadAttention's names (`in_proj_weight`, `in_proj_bias`,
`out_proj.weight`, `out_proj.bias`) and its initialisation, so checkpoints of torchvision's
ViT load unchanged. The relative position bias is the table of Swin (Liu et al. 2021, Eq. 4):
one learned value per head for each of the (2h-1)(2w-1) offsets between two tokens of an
h x w window, gathered by a fixed index buffer; or Swin V2's continuous form (Liu et al. 2022,
Eq. 3-4): a small MLP computes the table from log-spaced offsets, squashed to (0, 16). Swin
V2's scaled cosine attention divides by a learned temperature per head instead of sqrt(d).
Values computed from the window size are recomputed, never stored (non-persistent buffers, as
timm keeps them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def relative_position_index(height: int, width: int) -> torch.Tensor:
    """(N, N) int64, N = height * width: the table row holding the bias between token i
    (query) and token j (key) of a row-major window; the formula of Swin and torchvision."""
    coords = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width),
                                        indexing="ij")).flatten(1)
    offset = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    return (offset[0] + height - 1) * (2 * width - 1) + (offset[1] + width - 1)


def relative_coords_table(height: int, width: int) -> torch.Tensor:
    """(1, 2h-1, 2w-1, 2): the offsets between two tokens of a window, scaled to [-8, 8] and
    log-spaced (Swin V2, Eq. 4), the continuous bias MLP's input."""
    rows = torch.arange(-(height - 1), height, dtype=torch.float32) / max(height - 1, 1)
    cols = torch.arange(-(width - 1), width, dtype=torch.float32) / max(width - 1, 1)
    table = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).unsqueeze(0) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / 3.0


class SelfAttention(nn.Module):
    """query = key = value = x over the token dim N of (..., N, D); leading dims (windows,
    groups) act like the batch. `forward(x, mask=None)`: `mask` is added to the attention
    logits, broadcast over heads (per sample, right-aligned to (..., N, N))."""

    #: parameters with a meaning of their own, which a spec's init schemes leave as they are
    keeps_init = ("logit_scale",)

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True,
                 scale: float | None = None, window: tuple[int, int] | None = None,
                 mlp: int | None = None, cosine: bool = False):
        super().__init__()
        self.embed_dim = dim
        self.num_heads = heads
        self.dropout = dropout
        self.scale = scale  # None: 1 / sqrt(head dim)
        self.window = window
        self.mlp = mlp
        self.cosine = cosine
        # created in nn.MultiheadAttention's order, so a seed gives the same weights
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        if cosine:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
        if window is not None:
            height, width = window
            if mlp is None:
                self.relative_position_bias_table = nn.Parameter(
                    torch.empty((2 * height - 1) * (2 * width - 1), heads))
                nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            else:  # named as torchvision's Swin V2 names it
                self.cpb_mlp = nn.Sequential(nn.Linear(2, mlp), nn.ReLU(inplace=True),
                                             nn.Linear(mlp, heads, bias=False))
                self.register_buffer("relative_coords_table",
                                     relative_coords_table(height, width), persistent=False)
            self.register_buffer("relative_position_index",
                                 relative_position_index(height, width), persistent=False)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N): the learned bias between every pair of tokens of the window."""
        n = self.relative_position_index.shape[0]
        if self.mlp is None:
            table = self.relative_position_bias_table
        else:
            table = self.cpb_mlp(self.relative_coords_table).reshape(-1, self.num_heads)
        bias = table[self.relative_position_index.reshape(-1)]
        bias = bias.reshape(n, n, self.num_heads).permute(2, 0, 1)
        return bias if self.mlp is None else 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, dim = x.shape[-2], x.shape[-1]
        heads = self.num_heads
        in_bias = self.in_proj_bias
        if self.cosine and in_bias is not None:  # Swin V2's keys have no bias
            in_bias = torch.cat([in_bias[:dim], torch.zeros_like(in_bias[dim:2 * dim]),
                                 in_bias[2 * dim:]])
        qkv = F.linear(x, self.in_proj_weight, in_bias)
        qkv = qkv.reshape(-1, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (batch * leading dims, heads, N, head dim)
        scale = self.scale
        if self.cosine:  # cos(q, k) / temperature, the temperature at least 0.01
            temperature = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            q, k, scale = F.normalize(q, dim=-1) * temperature, F.normalize(k, dim=-1), 1.0
        logits_bias = self.position_bias() if self.window is not None else None
        if mask is not None:  # (batch, ..., N, N) -> (batch * leading dims, 1, N, N)
            mask = mask.unsqueeze(-3).expand(*x.shape[:-2], 1, n, n).reshape(-1, 1, n, n)
            logits_bias = mask if logits_bias is None else logits_bias + mask
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=logits_bias, dropout_p=self.dropout if self.training else 0.0,
            scale=scale)
        # a real copy: traced, SDPA's output may already be laid out (.., N, heads, ..)
        # so a reshape is recorded as a view, which ONNX's decomposed SDPA breaks
        out = out.transpose(1, 2).clone(memory_format=torch.contiguous_format)
        return self.out_proj(out.reshape(x.shape))

    def extra_repr(self) -> str:
        extra = f", window={self.window}" if self.window is not None else ""
        extra += f", mlp={self.mlp}" if self.mlp is not None else ""
        extra += f", scale={self.scale}" if self.scale is not None else ""
        extra += ", cosine=True" if self.cosine else ""
        return f"dim={self.embed_dim}, heads={self.num_heads}, dropout={self.dropout}{extra}"
