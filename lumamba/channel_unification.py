"""Channel unification (LUNA): Q learned queries cross-attend over the channels of each patch."""
from __future__ import annotations

import torch
from torch import nn

from .layers import Mlp


class ChannelUnification(nn.Module):
    """(N, C, E) tokens of one patch -> (N, Q, E) latents; linear in the channel count C."""

    def __init__(self, embed_dim: int, num_queries: int, num_heads: int, mlp_ratio: float,
                 n_layers: int, dropout: float):
        super().__init__()
        ff = int(mlp_ratio * embed_dim)
        self.query_embed = nn.Parameter(torch.empty(1, num_queries, embed_dim))
        # Frozen and unused; kept because the published checkpoints carry it (sic: "temparature").
        self.temparature = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.cross_attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = Mlp(embed_dim, ff, embed_dim, norm=True, dropout=dropout)
        self.keys_norm = nn.LayerNorm(embed_dim)
        self.values_norm = nn.LayerNorm(embed_dim)
        self.queries_norm = nn.LayerNorm(embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=ff, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.query_self_attn = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        nn.init.orthogonal_(self.query_embed)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns latents (N, Q, E) and head-averaged attention weights (N, Q, C)."""
        q = self.queries_norm(self.query_embed).expand(x.shape[0], -1, -1)
        a, attn = self.cross_attention(q, self.keys_norm(x), self.values_norm(x),
                                       need_weights=True, average_attn_weights=True)
        a = self.ffn(a) + a
        return self.query_self_attn(a), attn
