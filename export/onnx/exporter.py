"""Lower a LuMamba to recurrent-mode ONNX graphs plus the schedule manifest that drives them.

`export_onnx` builds the step modules of `step_modules.py` for one montage and window length,
exports each with torch's dynamo exporter (opset 18), optimises it with onnxscript and writes
`<graph>.onnx` files (IR version 10: onnxruntime 1.31 refuses onnx 1.23's default IR 14) and
`manifest.json`. No Loop or Scan: the executor iterates over tokens.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch
from onnxscript import ir
from onnxscript import optimizer as onnx_optimizer
from onnxscript import rewriter as onnx_rewriter

from lumamba.model import LuMamba
from lumamba.normalise import spec as normalisation_spec

from .frontend_stream import plan_stored_frontend, plan_streamed_frontend
from .mamba_chunk import LATENT, DEFAULT_CHUNK, check_chunk, plan_chunked_blocks, plan_chunked_head
from .mamba_window import EncoderPost, EncoderPre, HeadPost, HeadPre, ScanStep
from .manifest import Binding, BufferSpec, GraphSpec, Manifest, Stage, TensorSpec, check_mamba_form
from .step_modules import EncoderStep, Frontend, HeadStep, LinearHeadOut, MambaHeadOut, Unify

OPSET = 18
IR_VERSION = 10
# Fold every weight-only subexpression (e.g. a transposed Linear weight) whatever its size;
# onnxscript's default stops at 8192 elements, which would leave weight transposes in tiny's graphs.
_FOLD_LIMIT = 1 << 26
_FOLDED_SUFFIX = ".folded"
_ROWS = re.compile(r"(.+)\[(\d+):(\d+)\]")


@dataclass
class _Graph:
    """A graph to export: the module, example inputs (name -> tensor) and output names."""

    name: str
    kind: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    sources: tuple[str, ...]


class _Plan:
    """Buffers, graphs and stages, added in schedule order. Bindings are written "buf" (the whole
    buffer), "buf[t]" (row t of it, inside a loop), "buf[a:b]" (its rows a..b-1) or "buf[patch t]"
    (patch t of the input window)."""

    def __init__(self, patch_size: int):
        self.patch_size = patch_size
        self.buffers: dict[str, BufferSpec] = {}
        self.graphs: list[_Graph] = []
        self.stages: list[Stage] = []

    def buffer(self, name: str, shape: tuple[int, ...], kind: str = "activation") -> None:
        self.buffers[name] = BufferSpec(name, tuple(int(n) for n in shape), kind)

    def stage(self, name: str, module: torch.nn.Module | None, sources: tuple[str, ...], loop: str,
              inputs: dict[str, str], outputs: dict[str, str], zero: tuple[str, ...] = (), kind: str | None = None,
              span: tuple[int, int] | None = None):
        """One graph and the stage that runs it; example inputs take their shapes from the bindings.
        `module` None: one more stage of the graph `name` added before (the chunked Mamba form)."""
        ins, outs = self._bind(inputs), self._bind(outputs)
        if module is None:
            if not any(g.name == name for g in self.graphs):
                raise ValueError(f"stage {name!r} reuses a graph that was not added")
            self.stages.append(Stage(name, loop, ins, outs, zero, span))
            return
        examples = {}
        for b in ins:   # values do not matter: they only fix shapes for the exporter
            shape = self.buffers[b.buffer].shape
            if b.patch:   # (1, C, T) -> patch (1, C, P)
                shape = (1, shape[1], self.patch_size)
            if b.rows is not None:
                shape = (b.rows[1] - b.rows[0], *shape[1:])
            examples[b.port] = torch.randn((1, *shape[1:]) if b.row else shape)
        self.graphs.append(_Graph(name, kind or name, module, examples, tuple(b.port for b in outs), sources))
        self.stages.append(Stage(name, loop, ins, outs, zero, span))

    def mamba_stage(self, name: str, kind: str, module: torch.nn.Module, mamba, sources: tuple[str, ...],
                    loop: str, inputs: dict[str, str], outputs: dict[str, str], zero: tuple[str, ...] = ()):
        """A stage of a Mamba step graph, with its recurrent state in buffers of its own, zeroed first."""
        states = {"conv_state": (1, mamba.d_inner, mamba.d_conv), "ssm_state": (1, mamba.d_inner, mamba.d_state)}
        for port, shape in states.items():
            self.buffer(f"{name}_{port}", shape, "state")
        self.stage(name, module, sources, loop,
                   {**inputs, **{port: f"{name}_{port}" for port in states}},
                   {**outputs, **{f"{port}_out": f"{name}_{port}" for port in states}},
                   zero=(*zero, *(f"{name}_{port}" for port in states)), kind=kind)

    @staticmethod
    def _bind(ports: dict[str, str]) -> tuple[Binding, ...]:
        def bind(port: str, ref: str) -> Binding:
            if ref.endswith("[patch t]"):
                return Binding(port, ref[:-len("[patch t]")], patch=True)
            rows = _ROWS.fullmatch(ref)
            if rows:
                return Binding(port, rows[1], rows=(int(rows[2]), int(rows[3])))
            return Binding(port, ref[:-3], True) if ref.endswith("[t]") else Binding(port, ref)
        return tuple(bind(port, ref) for port, ref in ports.items())


FRONT_ENDS = ("streamed", "stored", "window")


def export_onnx(model: LuMamba, channel_names: Sequence[str], n_samples: int, out_dir: str | os.PathLike,
                checkpoint: str | os.PathLike | None = None, front_end: str = "streamed",
                mamba_form: str = "step", mamba_chunk: int = DEFAULT_CHUNK) -> Manifest:
    """Export `model` for one montage (`channel_names`, in the order of the input's channels) and
    one window length `n_samples` to `out_dir` (created; existing graph files are overwritten).

    `mamba_form` is how each Mamba (encoder directions, Mamba head) is cut into graphs: "window"
    (projections over all tokens of the window, only the scan per token; `mamba_window.py`) or
    "step" (default: one graph per token with the conv and scan state; the least RAM). "chunk": the window form's stages per chunk of
    `mamba_chunk` tokens (`mamba_chunk.py`: the projections reuse each weight over a chunk; RAM
    scales with the chunk, not the window). All compute the same model; the form is recorded as
    `manifest.mamba_form` (and the chunk as `manifest.mamba_chunk`).

    `checkpoint`, if given, is recorded in the manifest (path and SHA-256) as the weights' origin;
    the model's input normalisation (`model.preprocess`, from the checkpoint; z-score when unset)
    as `manifest.preprocess`, which the firmware applies to the int16 counts it owns.
    `front_end` "streamed" (default) computes the front end one patch at a time, straight into the
    channel unification (`frontend_stream`: GroupNorm statistics in passes over the patches first);
    "stored" evaluates each patch conv once and keeps its output for the window (no recomputation,
    more RAM: `frontend_stream.plan_stored_frontend`);
    "window" as one graph over the whole window (`Frontend`, then `Unify` per patch), which holds the
    window's tokens and activations at once.
    Returns the manifest, also written to `out_dir/manifest.json`.
    """
    config = model.config
    if isinstance(channel_names, str):
        raise ValueError(f"channel_names must be a list of channel names, got the string {channel_names!r}")
    names = [str(n) for n in channel_names]
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0 \
            or n_samples % config.patch_size:
        raise ValueError(f"n_samples must be a positive multiple of the patch size {config.patch_size}, "
                         f"got {n_samples!r}")
    n_samples = int(n_samples)
    if front_end not in FRONT_ENDS:
        raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {front_end!r}")
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("export needs a float32 model on the CPU: call model.cpu().float() first")
    check_mamba_form(mamba_form)
    check_chunk(mamba_chunk)
    checkpoint_info = _checkpoint_info(checkpoint) if checkpoint is not None else None

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # raises ChannelError naming any channel that cannot be placed
            position_embedding = model.position_embedding([names], torch.device("cpu"))[0]
        plan = _plan(model, position_embedding, n_samples, front_end, mamba_form, mamba_chunk)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        specs = _export_graphs(plan.graphs, out)
    finally:
        model.train(was_training)

    manifest = Manifest(
        config=config.to_dict(), n_classes=model.n_classes, channel_names=tuple(names),
        n_samples=n_samples, n_patches=n_samples // config.patch_size,
        graphs=specs, buffers=tuple(plan.buffers.values()), schedule=tuple(plan.stages),
        input_buffer="window", latent_buffer=LATENT if mamba_form == "chunk" else f"z{config.n_blocks}",
        logits_buffer="logits" if model.n_classes else None,
        opset=OPSET, ir_version=IR_VERSION, checkpoint=checkpoint_info, mamba_form=mamba_form,
        mamba_chunk=mamba_chunk if mamba_form == "chunk" else None,
        preprocess=dict(getattr(model, "preprocess", None) or normalisation_spec()),
        producer={"torch": torch.__version__, "onnx": onnx.__version__, "lumamba": _lumamba_version()},
    )
    manifest.validate()
    manifest.save(out)
    return manifest


def _plan(model: LuMamba, position_embedding: torch.Tensor, n_samples: int, front_end: str = "streamed",
          mamba_form: str = "step", mamba_chunk: int = DEFAULT_CHUNK) -> _Plan:
    """The graphs, buffers and schedule of one montage and window length."""
    c = model.config
    C, S, d = position_embedding.shape[0], n_samples // c.patch_size, c.d_model
    plan = _Plan(c.patch_size)
    plan.buffer("window", (1, C, n_samples), "input")
    if front_end == "streamed":
        plan_streamed_frontend(plan, model, position_embedding, n_samples)
    elif front_end == "stored":
        plan_stored_frontend(plan, model, position_embedding, n_samples)
    else:
        plan.buffer("tokens", (S, C, c.embed_dim))
        plan.buffer("z0", (S, d))
        plan.stage("frontend", Frontend(model, position_embedding),
                   ("patch_embed", "freq_embed", "channel_location_embedder"),
                   "once", {"window": "window"}, {"tokens": "tokens"})
        plan.stage("unify", Unify(model.cross_attn), ("cross_attn",),
                   "forward", {"tokens_t": "tokens[t]"}, {"latent_t": "z0[t]"})

    if mamba_form == "chunk":
        plan_chunked_blocks(model, plan, S, mamba_chunk)
    elif mamba_form == "window":
        _window_blocks(model, plan, S)
    else:
        # block i, forward:  acc_i[t]     = z_i[t]   + Mamba_fwd(LN(z_i))[t],  t = 0..S-1
        #          reverse:  z_{i+1}[t]   = acc_i[t] + Mamba_rev(LN(z_i))[t],  t = S-1..0
        for i, (block, norm) in enumerate(zip(model.mamba_blocks, model.norm_layers)):
            z, acc, z_next = f"z{i}", f"acc{i}", f"z{i + 1}"
            plan.buffer(acc, (S, d))
            plan.buffer(z_next, (S, d))
            plan.mamba_stage(f"block{i}_fwd", "encoder_step", EncoderStep(norm, block.mamba_fwd), block.mamba_fwd,
                             (f"norm_layers.{i}", f"mamba_blocks.{i}.mamba_fwd"), "forward",
                             {"x_t": f"{z}[t]", "acc_in": f"{z}[t]"}, {"acc_out": f"{acc}[t]"})
            plan.mamba_stage(f"block{i}_rev", "encoder_step", EncoderStep(norm, block.mamba_rev), block.mamba_rev,
                             (f"norm_layers.{i}", f"mamba_blocks.{i}.mamba_rev"), "reverse",
                             {"x_t": f"{z}[t]", "acc_in": f"{acc}[t]"}, {"acc_out": f"{z_next}[t]"})

    if not model.n_classes:
        return plan
    z, head = LATENT if mamba_form == "chunk" else f"z{c.n_blocks}", model.classifier
    plan.buffer("logits", (1, model.n_classes), "output")
    if c.head == "mamba" and mamba_form == "chunk":
        plan_chunked_head(model, plan, S, mamba_chunk)
    elif c.head == "mamba" and mamba_form == "window":
        _window_head(model, plan, S)
    elif c.head == "mamba":
        # head_acc = sum_t Mamba_head(GELU(fc1(z_t))), then logits = fc3(head_acc / S)
        plan.buffer("head_acc", (1, head.fc1.out_features), "state")
        plan.mamba_stage("head_step", "head_step", HeadStep(head), head.mamba_1,
                         ("classifier.fc1", "classifier.mamba_1"), "forward",
                         {"z_t": f"{z}[t]", "acc_in": "head_acc"}, {"acc_out": "head_acc"}, zero=("head_acc",))
        plan.stage("head_out", MambaHeadOut(head, S), ("classifier.fc3",), "once", {"acc": "head_acc"},
                   {"logits": "logits"})
    else:
        plan.stage("head_out", LinearHeadOut(head), ("classifier.fc1",), "once", {"z": z}, {"logits": "logits"})
    return plan


def _window_blocks(model: LuMamba, plan: _Plan, S: int) -> None:
    """The encoder blocks in the window form (`mamba_window.py`): per direction a `<name>_pre`
    stage over all tokens, a `<name>_scan` stage per token (t = 0..S-1 forward, S-1..0 reverse)
    and a `<name>_post` stage over all tokens.
    block i: acc_i = z_i + Mamba_fwd(LN(z_i)); z_{i+1} = acc_i + Mamba_rev(LN(z_i))."""
    d = model.config.d_model
    for i, (block, norm) in enumerate(zip(model.mamba_blocks, model.norm_layers)):
        z, acc, z_next = f"z{i}", f"acc{i}", f"z{i + 1}"
        plan.buffer(acc, (S, d))
        plan.buffer(z_next, (S, d))
        for direction, mamba, residual, out in (("fwd", block.mamba_fwd, z, acc), ("rev", block.mamba_rev, acc, z_next)):
            source = f"mamba_blocks.{i}.mamba_{direction}"
            _window_mamba(plan, f"block{i}_{direction}", "encoder", mamba, S, direction == "rev",
                          EncoderPre(norm, mamba, causal=direction == "fwd"), (f"norm_layers.{i}", source), {"x": z},
                          EncoderPost(mamba), (source,), {"residual": residual}, {"residual_out": out},
                          pre_kind=f"encoder_pre_{direction}")


def _window_head(model: LuMamba, plan: _Plan, S: int) -> None:
    """The Mamba head in the window form: logits = fc3(mean_t Mamba_head(GELU(fc1(z)))_t), the mean
    and fc3 in `head_post`."""
    head = model.classifier
    _window_mamba(plan, "head", "head", head.mamba_1, S, False,
                  HeadPre(head), ("classifier.fc1", "classifier.mamba_1"), {"z": f"z{model.config.n_blocks}"},
                  HeadPost(head), ("classifier.mamba_1", "classifier.fc3"), {}, {"logits": "logits"})


def _window_mamba(plan: _Plan, name: str, family: str, mamba, S: int, reverse: bool,
                  pre: torch.nn.Module, pre_sources: tuple[str, ...], pre_inputs: dict[str, str],
                  post: torch.nn.Module, post_sources: tuple[str, ...], post_inputs: dict[str, str],
                  post_outputs: dict[str, str], pre_kind: str | None = None) -> None:
    """The three stages of one Mamba in the window form, with its (S, ...) buffers u, delta, B, C,
    gate (written by `<name>_pre`), y (by `<name>_scan`) and the scan state."""
    widths = {"u": mamba.d_inner, "delta": mamba.d_inner, "B": mamba.d_state, "C": mamba.d_state,
              "gate": mamba.d_inner, "y": mamba.d_inner}
    for port, width in widths.items():
        plan.buffer(f"{name}_{port}", (S, width))
    state = f"{name}_ssm_state"
    plan.buffer(state, (1, mamba.d_inner, mamba.d_state), "state")
    plan.stage(f"{name}_pre", pre, pre_sources, "once", pre_inputs,
               {port: f"{name}_{port}" for port in ("u", "delta", "B", "C", "gate")}, kind=pre_kind or f"{family}_pre")
    plan.stage(f"{name}_scan", ScanStep(mamba), (pre_sources[-1],), "reverse" if reverse else "forward",
               {**{f"{port}_t": f"{name}_{port}[t]" for port in ("u", "delta", "B", "C")}, "ssm_state": state},
               {"y_t": f"{name}_y[t]", "ssm_state_out": state}, zero=(state,), kind=f"{family}_scan")
    plan.stage(f"{name}_post", post, post_sources, "once", {"y": f"{name}_y", "gate": f"{name}_gate", **post_inputs},
               post_outputs, kind=f"{family}_post")


def _export_graphs(graphs: list[_Graph], out_dir: Path) -> tuple[GraphSpec, ...]:
    """Export every graph. A graph with the kind and input shapes of one already exported (the
    encoder steps of all blocks and directions) is that graph with this module's weights put in:
    the same structure by construction, and one export (seconds) instead of several."""
    specs, templates = [], {}
    for g in graphs:
        key = (g.kind, tuple((n, tuple(t.shape)) for n, t in g.inputs.items()))
        model = _with_weights(templates[key], g.module) if key in templates else None
        if model is None:
            model = templates[key] = _trace(g)
        specs.append(_save(model, g, out_dir))
    return tuple(specs)


def _trace(g: _Graph) -> ir.Model:
    """torch module -> optimised ONNX IR, weights named as in the module's state dict."""
    with _quiet_exporter():
        program = torch.onnx.export(g.module.eval(), tuple(g.inputs.values()), dynamo=True, opset_version=OPSET,
                                    input_names=list(g.inputs), output_names=list(g.outputs),
                                    optimize=False, verbose=False)
    model = program.model
    _optimize(model, set(g.module.state_dict()))
    model.graph.name = g.name
    return model


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the dynamo exporter's notices that say nothing about this model (torchvision ops
    it skips registering, a pytree deprecation inside torch); errors still propagate."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        logger.setLevel(level)


def _with_weights(template: ir.Model, module: torch.nn.Module) -> ir.Model | None:
    """A copy of `template` holding `module`'s weights, or None if some template constant was
    computed from weights at export (then only a fresh export gives the right values)."""
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    model = ir.serde.deserialize_model(ir.serde.serialize_model(template))
    for name, value in model.graph.initializers.items():
        if name in weights:
            if tuple(value.shape) != weights[name].shape:
                return None
            value.const_value = ir.tensor(weights[name], name=name)
        elif name.endswith(_FOLDED_SUFFIX):
            return None
    return model


def _save(model: ir.Model, g: _Graph, out_dir: Path) -> GraphSpec:
    """Check and write one graph (as IR version 10); returns its manifest entry."""
    model.graph.name = g.name
    proto = ir.serde.serialize_model(model)
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, out_dir / f"{g.name}.onnx")
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in (*proto.graph.input, *proto.graph.output)}
    n_params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return GraphSpec(
        name=g.name, file=f"{g.name}.onnx", kind=g.kind,
        inputs=tuple(TensorSpec(n, shapes[n]) for n in g.inputs),
        outputs=tuple(TensorSpec(n, shapes[n]) for n in g.outputs),
        sources=g.sources, structure=structure_fingerprint(proto), n_params=n_params)


def _optimize(model: ir.Model, weight_names: set[str]) -> None:
    """onnxscript's default optimisation, with two changes.

    - No initializer de-duplication: it would merge equal-valued weights of different modules
      (every fresh LayerNorm has weight 1, bias 0) under one name, so a graph's structure would
      depend on the weight values.
    - A constant computed from weights (a transposed Linear weight, a reshaped GroupNorm scale) is
      named `<weight>.folded` (`<w1>+<w2>.folded` for several), so the weights' origin stays
      visible and `_with_weights` knows it cannot simply be replaced; node and value metadata (stack traces with local paths)
      are dropped, so files are small and reproducible.
    """
    passes = ir.passes.common
    passes.InlinePass()(model)
    for _ in range(2):
        onnx_optimizer.fold_constants(model, onnx_shape_inference=True, input_size_limit=_FOLD_LIMIT,
                                      output_size_limit=_FOLD_LIMIT)
        onnx_rewriter.rewrite(model)
        passes.RemoveUnusedNodesPass()(model)
    passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    passes.CommonSubexpressionEliminationPass()(model)
    passes.RemoveUnusedNodesPass()(model)
    passes.NameFixPass()(model)
    for value in list(model.graph.initializers.values()):
        sources = sorted(s for s in value.meta.get(onnx_optimizer.FOLDED_FROM_KEY, ()) if s in weight_names)
        if value.name not in weight_names and sources:
            name = "+".join(sources) + _FOLDED_SUFFIX
            for k in itertools.count(1):
                if name not in model.graph.initializers:
                    break
                name = f"{'+'.join(sources)}{_FOLDED_SUFFIX}{k}"
            value.name = name
        value.metadata_props.clear()
    passes.ClearMetadataAndDocStringPass()(model)


def structure_fingerprint(model: onnx.ModelProto) -> str:
    """SHA-256 (16 hex digits) of a graph with float initializer values left out: equal fingerprints
    mean the graphs differ only in their weights, so one compiled kernel set serves them all."""
    g = onnx.GraphProto()
    g.CopyFrom(model.graph)
    g.name = ""
    for t in g.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.ClearField("raw_data")
            t.ClearField("float_data")
    return hashlib.sha256(g.SerializeToString(deterministic=True)).hexdigest()[:16]


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Histogram of the graph's op types, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def _checkpoint_info(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path.resolve()), "sha256": digest.hexdigest()}


def _lumamba_version() -> str:
    import lumamba
    return lumamba.__version__
