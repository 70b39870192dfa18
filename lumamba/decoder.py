"""Reconstruction decoder for masked pre-training: channel queries attend to the patch latents."""
from __future__ import annotations

import torch
from torch import nn

from .channels import CHANNEL_VOCABULARY
from .layers import Mlp


class ChannelEmbedding(nn.Module):
    """Learned embedding over the fixed 90-name channel vocabulary of the published decoder."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embeddings = nn.Embedding(len(CHANNEL_VOCABULARY), embed_dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embeddings(idx)


class ReconstructionDecoder(nn.Module):
    """One pre-norm TransformerDecoderLayer, LayerNorm, MLP E -> 4E -> P."""

    def __init__(self, embed_dim: int, num_heads: int, num_queries: int, patch_size: int):
        super().__init__()
        self.num_queries = num_queries
        layer = nn.TransformerDecoderLayer(embed_dim, num_heads, dim_feedforward=4 * embed_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.decoder_pred = nn.TransformerDecoder(layer, 1)
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_linear = Mlp(embed_dim, 4 * embed_dim, patch_size)

    def forward(self, latent: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """latent (B, S, Q*E), queries (B, C, E) -> signal (B, C, S*P)."""
        B, S, _ = latent.shape
        C = queries.shape[1]
        memory = latent.reshape(B * S, self.num_queries, -1)
        q = queries.repeat_interleave(S, dim=0)                     # row b*S + s gets sample b's queries
        out = self.decoder_linear(self.norm(self.decoder_pred(q, memory)))   # (B*S, C, P)
        return out.reshape(B, S, C, -1).permute(0, 2, 1, 3).reshape(B, C, -1)
