"""Multi-head self-attention over the last two dims of (..., N, D), with an optional learned
relative position bias (Swin, MaxViT) and an optional additive mask input.

Parameters carry nn.MultiheadAttention's names (`in_proj_weight`, `in_proj_bias`,
`out_proj.weight`, `out_proj.bias`) and its initialisation, so checkpoints of torchvision's
ViT load unchanged. The relative position bias is the table of Swin (Liu et al. 2021, Eq. 4):
one learned value per head for each of the (2h-1)(2w-1) offsets between two tokens of an
h x w window, gathered by a fixed index buffer. The index is recomputed from the window size,
never stored (a non-persistent buffer, as timm keeps it).
"""

from __future__ import annotations

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


class SelfAttention(nn.Module):
    """query = key = value = x over the token dim N of (..., N, D); leading dims (windows,
    groups) act like the batch. `forward(x, mask=None)`: `mask` is added to the attention
    logits, broadcast over heads (per sample, right-aligned to (..., N, N))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True,
                 scale: float | None = None, window: tuple[int, int] | None = None):
        super().__init__()
        self.embed_dim = dim
        self.num_heads = heads
        self.dropout = dropout
        self.scale = scale  # None: 1 / sqrt(head dim)
        self.window = window
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
        if window is not None:
            height, width = window
            self.relative_position_bias_table = nn.Parameter(
                torch.empty((2 * height - 1) * (2 * width - 1), heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index",
                                 relative_position_index(height, width), persistent=False)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N): the learned bias between every pair of tokens of the window."""
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, dim = x.shape[-2], x.shape[-1]
        heads = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(-1, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (batch * leading dims, heads, N, head dim)
        logits_bias = self.position_bias() if self.window is not None else None
        if mask is not None:  # (batch, ..., N, N) -> (batch * leading dims, 1, N, N)
            mask = mask.unsqueeze(-3).expand(*x.shape[:-2], 1, n, n).reshape(-1, 1, n, n)
            logits_bias = mask if logits_bias is None else logits_bias + mask
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=logits_bias, dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale)
        # a real copy: traced, SDPA's output may already be laid out (.., N, heads, ..)
        # so a reshape is recorded as a view, which ONNX's decomposed SDPA breaks
        out = out.transpose(1, 2).clone(memory_format=torch.contiguous_format)
        return self.out_proj(out.reshape(x.shape))

    def extra_repr(self) -> str:
        extra = f", window={self.window}" if self.window is not None else ""
        extra += f", scale={self.scale}" if self.scale is not None else ""
        return f"dim={self.embed_dim}, heads={self.num_heads}, dropout={self.dropout}{extra}"
