"""LuMamba: LUNA's channel-unifying front-end + FEMBA's bidirectional Mamba blocks."""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from .channel_unification import ChannelUnification
from .channels import ChannelError, vocabulary_index
from .config import LuMambaConfig
from .decoder import ChannelEmbedding, ReconstructionDecoder
from .heads import LinearHead, MambaHead
from .mamba import BiMamba
from .patch_embed import FrequencyEmbed, TimePatchEmbed
from .layers import Mlp
from .position_embed import position_features
from .positions import electrode_positions

# One montage for the whole batch, or one per sample.
ChannelNames = Union[Sequence[str], Sequence[Sequence[str]]]
# scan modes of the whole model: a block scan, or "recurrent" (Mamba.step per token, as exported)
MODEL_SCANS = ("parallel", "sequential", "recurrent")


class LuMamba(nn.Module):
    """The published LuMamba. `n_classes == 0` builds the pre-training model (encoder + reconstruction
    decoder + channel-name embedding); `n_classes > 0` the classification model (encoder + head).
    Parameter names equal the published checkpoints' keys (without the `model.` prefix)."""

    def __init__(self, config: LuMambaConfig, n_classes: int = 0):
        super().__init__()
        c = self.config = config
        self.n_classes = n_classes
        # Input normalisation recorded in checkpoints (lumamba.normalise.spec); set by training/loading.
        self.preprocess: dict | None = None
        E = c.embed_dim
        self.patch_embed = TimePatchEmbed(E, c.patch_size)
        self.freq_embed = FrequencyEmbed(E, c.patch_size)
        self.channel_location_embedder = nn.Sequential(Mlp(E, 2 * E, E, norm=True))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, E))
        self.cross_attn = ChannelUnification(E, c.num_queries, c.num_heads, c.mlp_ratio, c.n_query_layers, c.dropout)
        mamba_kw = dict(d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)
        self.mamba_blocks = nn.ModuleList(BiMamba(c.d_model, **mamba_kw) for _ in range(c.n_blocks))
        self.norm_layers = nn.ModuleList(nn.LayerNorm(c.d_model) for _ in range(c.n_blocks))
        if n_classes == 0:
            self.decoder_head = ReconstructionDecoder(E, c.num_heads, c.num_queries, c.patch_size)
            self.channel_emb = ChannelEmbedding(E)
        elif c.head == "mamba":
            self.classifier = MambaHead(c.d_model, c.head_hidden, n_classes, d_state=c.d_state, d_conv=c.d_conv,
                                        expand=c.head_expand)
        else:
            self.classifier = LinearHead(c.d_model, n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The published init: xavier-normal Linears with zero bias, unit LayerNorms,
        trunc-normal mask token; Mamba modules keep mamba_ssm's own init."""
        mamba_params = {id(p) for m in self.modules() if m.__class__.__name__ == "Mamba" for p in m.parameters()}
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m.weight) not in mamba_params:
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
        if self.n_classes > 0:
            self.mask_token.requires_grad_(False)   # unused when fine-tuning, as published

    # ---- input handling -------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor, channel_names: ChannelNames) -> list[list[str]]:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a float tensor of shape (B, C, T), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point, got {x.dtype}")
        B, C, T = x.shape
        P = self.config.patch_size
        if T == 0 or T % P != 0:
            raise ValueError(f"window length T={T} must be a positive multiple of the patch size {P}")
        names = _per_sample_names(channel_names, B)
        for n in names:
            if len(n) != C:
                raise ValueError(f"x has {C} channels but {len(n)} channel names were given")
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).nonzero()[0].tolist()
            raise ValueError(f"x contains non-finite values (first at sample {bad[0]}, channel "
                             f"{names[bad[0]][bad[1]]!r}, time {bad[2]})")
        return names

    def position_embedding(self, names: list[list[str]], device: torch.device) -> torch.Tensor:
        """(B, C, E) electrode-position embedding, one montage per sample (positions in the MNE head frame)."""
        pos = torch.as_tensor(np.stack([electrode_positions(n) for n in names]), dtype=self.mask_token.dtype, device=device)
        noise = self.config.position_noise_std if self.training else 0.0
        return self.channel_location_embedder(position_features(pos, self.config.embed_dim, noise))

    # ---- encoder --------------------------------------------------------------------------

    def tokens(self, x: torch.Tensor, pos_emb: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens + position embedding: (B, C, T) -> (B, S, C, E). patch_mask (B, C, S), True = hidden."""
        t = self.patch_embed(x) + self.freq_embed(x)                     # (B, C, S, E)
        if patch_mask is not None:
            t = torch.where(patch_mask[..., None], self.mask_token.to(t.dtype), t)
        return (t + pos_emb[:, :, None, :]).transpose(1, 2)

    def unify(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, C, E) -> latent sequence (B, S, Q*E) and attention (B, S, Q, C)."""
        B, S, C, E = tokens.shape
        z, attn = self.cross_attn(tokens.reshape(B * S, C, E))
        return z.reshape(B, S, -1), attn.reshape(B, S, -1, C)

    def temporal(self, z: torch.Tensor, scan: str = "parallel") -> torch.Tensor:
        """The pre-norm bidirectional Mamba blocks: z = z + BiMamba(LN(z)), no final norm."""
        if scan not in MODEL_SCANS:
            raise ValueError(f"scan must be one of {MODEL_SCANS}, got {scan!r}")
        for block, norm in zip(self.mamba_blocks, self.norm_layers):
            h = norm(z)
            z = z + (block.forward_recurrent(h) if scan == "recurrent" else block(h, scan=scan))
        return z

    def _encode(self, x, channel_names, patch_mask=None, scan="parallel"):
        names = self._check_input(x, channel_names)
        pos_emb = self.position_embedding(names, x.device)
        z, attn = self.unify(self.tokens(x, pos_emb, patch_mask))
        return self.temporal(z, scan), attn, pos_emb, names

    def encode(self, x: torch.Tensor, channel_names: ChannelNames, scan: str = "parallel") -> torch.Tensor:
        """Latent sequence (B, S, Q*E) of an unmasked window; S = T / patch_size."""
        return self._encode(x, channel_names, scan=scan)[0]

    def attention_maps(self, x: torch.Tensor, channel_names: ChannelNames) -> torch.Tensor:
        """Head-averaged channel-unification attention (B, S, Q, C)."""
        names = self._check_input(x, channel_names)
        pos_emb = self.position_embedding(names, x.device)
        return self.unify(self.tokens(x, pos_emb))[1]

    # ---- heads ----------------------------------------------------------------------------

    def reconstruct(self, x: torch.Tensor, channel_names: ChannelNames, mask: torch.Tensor,
                    return_attention: bool = False):
        """Masked reconstruction (B, C, T). mask: bool (B, C, T), True = hidden; a patch is hidden
        when any of its samples is. Needs the pre-training model (n_classes == 0)."""
        if self.n_classes:
            raise ValueError("reconstruct() needs the pre-training model (n_classes=0); this one is a classifier")
        if mask.shape != x.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool with the shape of x {tuple(x.shape)}, got {mask.dtype} {tuple(mask.shape)}")
        B, C, T = x.shape
        patch_mask = mask.reshape(B, C, T // self.config.patch_size, -1).any(-1)
        z, attn, pos_emb, names = self._encode(x, channel_names, patch_mask)
        idx = torch.tensor([[_vocab_row(n) for n in sample] for sample in names], device=x.device)
        rec = self.decoder_head(z, pos_emb + self.channel_emb(idx))
        return (rec, attn) if return_attention else rec

    def forward(self, x: torch.Tensor, channel_names: ChannelNames, scan: str = "parallel") -> torch.Tensor:
        """Class logits (B, n_classes)."""
        if not self.n_classes:
            raise ValueError("this is the pre-training model (n_classes=0): use encode() or reconstruct(), "
                             "or build LuMamba(config, n_classes=K) for logits")
        return self.classifier(self.encode(x, channel_names, scan=scan), scan=scan)


def _per_sample_names(channel_names: ChannelNames, batch: int) -> list[list[str]]:
    if isinstance(channel_names, str) or len(channel_names) == 0:
        raise ChannelError(f"channel_names must be a non-empty list of channel names, got {channel_names!r}")
    if isinstance(channel_names[0], str):
        return [list(channel_names)] * batch
    if len(channel_names) != batch:
        raise ValueError(f"got {len(channel_names)} per-sample channel lists for a batch of {batch}")
    return [list(n) for n in channel_names]


def _vocab_row(name: str) -> int:
    row = vocabulary_index(name)
    if row is None:
        raise ChannelError(f"channel {name!r} has no decoder embedding: reconstruction needs names from the "
                           "90-name channel vocabulary (lumamba.channels.CHANNEL_VOCABULARY)")
    return row


