"""The chunked window form of a Mamba: the window form (`mamba_window`) run over chunks of C tokens.

The window form's projections run as GEMMs over all S tokens, but its (S, d_inner) float buffers
and in_proj's (S, 2 d_inner) output make it the form that needs the most RAM. Here each Mamba runs
chunk by chunk (forward: chunks 0, 1, ...; reverse: the last chunk first), three stages per chunk:

    <name>_pre    rows [a, b) of x, conv context (d_conv-1, d_inner) -> u, delta, B, C, gate (n, ...),
                  context'                                                    (n = b - a <= C)
    <name>_scan   per token t of the chunk (the window form's `ScanStep`), the scan state carried
    <name>_post   encoder: rows [a, b) of residual + out_proj(y * gate); head: head_acc += sum_t out_proj(y * gate)

The conv context is the last d_conv-1 in_proj outputs (before the conv) of the chunk before, or,
for the anti-causal (reverse) conv, the first d_conv-1 of the chunk after: zeros at the window's
ends, as the padding of the window form. RAM scales with C instead of S, and the projections
still reuse each weight over C tokens. All chunks of a Mamba run the same graphs (one set of
weights in flash), except a last chunk of S mod C tokens, which has graphs of its own shape.
The head's logits come from the step form's `MambaHeadOut` (fc3(head_acc / S)) after the chunks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lumamba.heads import MambaHead
from lumamba.mamba import Mamba

from .mamba_window import EncoderPost, MambaWindowPre, ScanStep, _OutProj
from .step_modules import MambaHeadOut


DEFAULT_CHUNK = 4      # the int8 GEMM kernels reach their per-MAC cost at 4 tokens (BENCHMARKS, "Chunked")


def check_chunk(chunk) -> int:
    """`chunk` if it is a positive int (tokens per chunk), else a ValueError."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"mamba_chunk must be a positive number of tokens, got {chunk!r}")
    return chunk


class MambaChunkPre(MambaWindowPre):
    """`MambaWindowPre` over one chunk, with the conv context of the neighbouring chunk as a state
    input/output (the window form's zero padding is this context at the window's ends)."""

    def forward(self, x: Tensor, conv_ctx: Tensor):
        u, z = self.in_proj(x).chunk(2, dim=-1)                          # (n, d_inner) each
        n, K = u.shape[0], self.d_conv
        # causal: the K-1 tokens before the chunk come first; anti-causal: the K-1 after come last
        full = torch.cat([conv_ctx, u], dim=0) if self.causal else torch.cat([u, conv_ctx], dim=0)
        acc = None
        for k in range(K):          # tap k of token t reads token t - (K-1) + k (causal), t + (K-1) - k (else)
            start = k if self.causal else K - 1 - k
            tap = full[start:start + n] * getattr(self, f"conv_tap{k}")
            acc = tap if acc is None else acc + tap
        u = F.silu(acc + self.conv_bias)
        dt, B, C = self.x_proj(u).split(self.splits, dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        context = full[n:] if self.causal else full[:K - 1]
        return u, delta, B, C, F.silu(z), context


class EncoderChunkPre(nn.Module):
    """LN, then `MambaChunkPre`: one direction of a pre-norm BiMamba block over one chunk."""

    def __init__(self, norm: nn.LayerNorm, mamba: Mamba, causal: bool):
        super().__init__()
        self.norm = norm
        self.mamba = MambaChunkPre(mamba, causal)

    def forward(self, x: Tensor, conv_ctx: Tensor):
        return self.mamba(self.norm(x), conv_ctx)


class HeadChunkPre(nn.Module):
    """GELU(fc1(z)), then `MambaChunkPre` (causal): the Mamba head over one chunk."""

    def __init__(self, head: MambaHead):
        super().__init__()
        self.fc1, self.activation1 = head.fc1, head.activation1
        self.mamba = MambaChunkPre(head.mamba_1, causal=True)

    def forward(self, z: Tensor, conv_ctx: Tensor):
        return self.mamba(self.activation1(self.fc1(z)), conv_ctx)


class HeadChunkPost(nn.Module):
    """acc' = acc + sum over the chunk's tokens of out_proj(y * gate) (the head's running sum over
    time, which `MambaHeadOut` turns into logits)."""

    def __init__(self, head: MambaHead):
        super().__init__()
        self.mamba = _OutProj(head.mamba_1)

    def forward(self, y: Tensor, gate: Tensor, acc_in: Tensor) -> Tensor:
        return acc_in + self.mamba.out_proj(y * gate).sum(dim=0, keepdim=True)


def chunks(S: int, chunk: int, reverse: bool) -> list[tuple[int, int]]:
    """Token ranges [a, b) of the chunks in the order they run (the last first when reverse)."""
    spans = [(a, min(a + chunk, S)) for a in range(0, S, chunk)]
    return spans[::-1] if reverse else spans


LATENT = "z0"


def plan_chunked_blocks(model, plan, S: int, chunk: int) -> None:
    """The encoder blocks in the chunked form, on the exporter's `_Plan`.
    block i: acc = z + Mamba_fwd(LN(z)); z = acc + Mamba_rev(LN(z)), z updated in place (`LATENT`,
    the front end's output): the reverse direction's chunk [a, b) writes rows [a, b) of z after its
    pre stage read them, and no later stage reads the old rows (the conv context is carried), so
    the encoder holds two (S, d_model) buffers instead of three."""
    check_chunk(chunk)
    d = model.config.d_model
    z, acc = LATENT, "acc"
    plan.buffer(acc, (S, d))
    for i, (block, norm) in enumerate(zip(model.mamba_blocks, model.norm_layers)):
        for direction, mamba, residual, out in (("fwd", block.mamba_fwd, z, acc), ("rev", block.mamba_rev, acc, z)):
            source = f"mamba_blocks.{i}.mamba_{direction}"
            causal = direction == "fwd"
            _chunked_mamba(plan, f"block{i}_{direction}", "encoder", mamba, S, chunk, not causal,
                           lambda: EncoderChunkPre(norm, mamba, causal), (f"norm_layers.{i}", source), z,
                           lambda: EncoderPost(mamba), (source,),
                           lambda a, b: ({"residual": f"{residual}[{a}:{b}]"}, {"residual_out": f"{out}[{a}:{b}]"}),
                           pre_kind=f"encoder_chunk_pre_{direction}")


def plan_chunked_head(model, plan, S: int, chunk: int) -> None:
    """The Mamba head in the chunked form: head_acc = sum over the chunks of their post stages,
    then logits = fc3(head_acc / S) (`head_out`, as in the step form)."""
    check_chunk(chunk)
    head = model.classifier
    plan.buffer("head_acc", (1, head.fc1.out_features), "state")
    _chunked_mamba(plan, "head", "head", head.mamba_1, S, chunk, False,
                   lambda: HeadChunkPre(head), ("classifier.fc1", "classifier.mamba_1"), LATENT,
                   lambda: HeadChunkPost(head), ("classifier.mamba_1",),
                   lambda a, b: ({"acc_in": "head_acc"}, {"acc_out": "head_acc"}),
                   pre_kind="head_chunk_pre", post_kind="head_chunk_post", first_zero=("head_acc",))
    plan.stage("head_out", MambaHeadOut(head, S), ("classifier.fc3",), "once", {"acc": "head_acc"},
               {"logits": "logits"})


def _chunked_mamba(plan, name: str, family: str, mamba: Mamba, S: int, chunk: int, reverse: bool,
                   pre, pre_sources: tuple[str, ...], x: str, post, post_sources: tuple[str, ...], post_ports,
                   pre_kind: str, post_kind: str | None = None, first_zero: tuple[str, ...] = ()) -> None:
    """The stages of one Mamba over its chunks: per chunk pre (once), scan (per token of the chunk),
    post (once). `pre`/`post` make the modules (only called for a chunk shape not yet exported);
    `post_ports(a, b)` gives the post stage's extra inputs and its outputs for chunk [a, b).
    Each chunk has buffers of its own (u, delta, B, C, gate, y: `<name>_<port>_c<k>`, k in run
    order): each lives from its chunk's pre to its post only, so the memory planner lays the next
    chunk's pre scratch over the last chunk's y, and RAM is what one chunk needs, not two."""
    n_full = min(chunk, S)
    widths = {"u": mamba.d_inner, "delta": mamba.d_inner, "B": mamba.d_state, "C": mamba.d_state,
              "gate": mamba.d_inner, "y": mamba.d_inner}
    context, state = f"{name}_conv_ctx", f"{name}_ssm_state"
    plan.buffer(context, (mamba.d_conv - 1, mamba.d_inner), "state")
    plan.buffer(state, (1, mamba.d_inner, mamba.d_state), "state")
    exported: set[str] = set()
    for index, (a, b) in enumerate(chunks(S, chunk, reverse)):
        n = b - a
        suffix = "" if n == n_full else "_tail"     # a last chunk of S mod C tokens: graphs of its own shape
        buf = {port: f"{name}_{port}_c{index}" for port in widths}
        for port, width in widths.items():
            plan.buffer(buf[port], (n, width))
        post_in, post_out = post_ports(a, b)
        first = index == 0
        pre_graph, scan_graph, post_graph = f"{name}_pre{suffix}", f"{name}_scan", f"{name}_post{suffix}"
        plan.stage(pre_graph, None if pre_graph in exported else pre(), pre_sources, "once",
                   {"x": f"{x}[{a}:{b}]", "conv_ctx": context},
                   {**{port: buf[port] for port in ("u", "delta", "B", "C", "gate")},
                    "conv_ctx_out": context},
                   zero=(context,) if first else (), kind=pre_kind)
        plan.stage(scan_graph, None if scan_graph in exported else ScanStep(mamba), (pre_sources[-1],),
                   "reverse" if reverse else "forward",
                   {**{f"{port}_t": f"{buf[port]}[t]" for port in ("u", "delta", "B", "C")}, "ssm_state": state},
                   {"y_t": f"{buf['y']}[t]", "ssm_state_out": state}, zero=(state,) if first else (),
                   kind=f"{family}_scan", span=(0, n))
        plan.stage(post_graph, None if post_graph in exported else post(), post_sources, "once",
                   {"y": buf["y"], "gate": buf["gate"], **post_in}, post_out,
                   zero=first_zero if first else (), kind=post_kind or f"{family}_post")
        exported.update((pre_graph, scan_graph, post_graph))

