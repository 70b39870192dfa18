"""Recurrent-mode ONNX export: graph validity, TVM import, manifest, and onnxruntime vs PyTorch parity.

Tolerances (absolute, float32 throughout): logits 1e-5 and encoder latent 1e-4, as the issue
asks; front-end tokens 1e-5. onnxruntime and PyTorch compute the same operations in a
different order (matmul blocking, the parallel scan in PyTorch vs the step recurrence in ONNX),
so each op may differ by a few ulp; over the ~100 ops on the path to the latent (magnitude <= ~10)
that accumulates to about 1e-5, well inside the bounds. A wrong weight, a missed LayerNorm or a
state carried in the wrong direction moves the outputs by 1e-2 or more.
"""
from __future__ import annotations

import copy

import dataclasses
import hashlib
import itertools
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lumamba.channels import ChannelError
from lumamba.checkpoint import load_pretrained, save_checkpoint
from lumamba.config import CONFIGS
from lumamba.export import export_onnx, load
from lumamba.export.onnx.manifest import Manifest
from lumamba.export.onnx.exporter import IR_VERSION, OPSET
from lumamba.export.onnx.frontend_stream import CombineStats, FrontendPatch, GroupNormStats
from lumamba.export.onnx.step_modules import EncoderStep, Frontend
from lumamba.mamba import MambaState
from lumamba.model import LuMamba
from lumamba.montages import MONTAGES

N_CLASSES = 3
TOL_LOGITS, TOL_LATENT, TOL_TOKENS = 1e-5, 1e-4, 1e-5
MONTAGE_NAMES = ("tcp22", "tcp20", "apava16")     # 22, 20 and 16 channels
LENGTHS = (640, 1280)
SMALL = ("small", "apava16", 1280)     # two blocks: the case most tests below inspect
DEFAULT_CASES = [SMALL, ("tiny", "tcp22", 640)]
WINDOW = ("micro", "tcp20", 640, "window")   # the whole-window front end (export option front_end="window")
STORED = ("micro", "tcp20", 640, "stored")   # each patch conv once, outputs kept (front_end="stored")
SLOW_CASES = [c for c in itertools.product(("micro", "small", "tiny"), MONTAGE_NAMES, LENGTHS) if c not in DEFAULT_CASES]


def make_model(config, seed: int = 0, n_classes: int = N_CLASSES) -> LuMamba:
    """A fresh model with its constant-initialised parameters (LayerNorm/GroupNorm scales and
    shifts, zero biases, D, and A_log, equal in every Mamba) perturbed, so that a weight bound to
    the wrong module changes the outputs. Linear and conv weights are random already."""
    torch.manual_seed(seed)
    model = LuMamba(CONFIGS[config] if isinstance(config, str) else config, n_classes=n_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1 or name.endswith("A_log"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def windows(n_channels: int, n_samples: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, n_channels, n_samples, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """Export each (config, montage, T, front end, Mamba form; here the window form by default) once
    per session; the model goes through a checkpoint round trip first (save_checkpoint -> load_pretrained, the published layout)."""
    cache = {}

    def get(config: str, montage: str, n_samples: int, front_end: str = "streamed", mamba_form: str = "window"):
        key = (config, montage, n_samples, front_end, mamba_form)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"{config}_{montage}_{n_samples}_{front_end}_{mamba_form}")
            checkpoint = save_checkpoint(make_model(config), root / "model.safetensors")
            model = load_pretrained(checkpoint, n_classes=N_CLASSES).eval()
            names = list(MONTAGES[montage])
            manifest = export_onnx(model, names, n_samples, root / "onnx", checkpoint=checkpoint,
                                   front_end=front_end, mamba_form=mamba_form)
            cache[key] = model, names, root / "onnx", manifest
        return cache[key]

    return get


def max_err(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def check_parity(model, names, out_dir, n_samples, label: str):
    runner = load(out_dir)
    x = windows(len(names), n_samples)
    with torch.no_grad():
        logits = model(x, names).numpy()
        latent = model.encode(x, names).numpy()
    err_logits, err_latent = max_err(runner(x), logits), max_err(runner.latent(x), latent)
    print(f"\n{label}: max abs error logits {err_logits:.2e} (|logits| <= {np.abs(logits).max():.2f}), "
          f"latent {err_latent:.2e} (|latent| <= {np.abs(latent).max():.2f})")
    assert err_logits <= TOL_LOGITS
    assert err_latent <= TOL_LATENT


@pytest.mark.parametrize("config,montage,n_samples,front_end", [(*c, "streamed") for c in DEFAULT_CASES] + [WINDOW, STORED])
def test_parity_with_pytorch(exports, config, montage, n_samples, front_end):
    model, names, out_dir, _ = exports(config, montage, n_samples, front_end)
    check_parity(model, names, out_dir, n_samples, f"{config} {montage} T={n_samples} ({front_end} front end)")


def test_parity_with_pytorch_step_form(exports):
    model, names, out_dir, _ = exports(*SMALL, mamba_form="step")
    check_parity(model, names, out_dir, SMALL[2], "{} {} T={} (step form)".format(*SMALL))


@pytest.mark.slow
@pytest.mark.parametrize("config,montage,n_samples", SLOW_CASES)
@pytest.mark.parametrize("mamba_form", ["window", "step", "chunk"])
def test_parity_with_pytorch_grid(exports, config, montage, n_samples, mamba_form):
    model, names, out_dir, _ = exports(config, montage, n_samples, mamba_form=mamba_form)
    check_parity(model, names, out_dir, n_samples, f"{config} {montage} T={n_samples} ({mamba_form} form)")


@pytest.mark.parametrize("mamba_form, graphs", [("step", ("block0_fwd", "block0_rev")),
                                                ("window", ("block0_fwd_pre", "block0_rev_pre"))])
def test_parity_detects_swapped_directions(exports, tmp_path, mamba_form, graphs):
    """The tolerances are far below the effect of a wiring error: running block 0's reverse
    weights forwards (and vice versa) moves the latent by much more than 1e-4. In the window form
    the pre graphs of the two directions differ in structure (causal and anti-causal conv), so
    swapping them also swaps the conv's direction."""
    model, names, out_dir, _ = exports(*SMALL, mamba_form=mamba_form)
    shutil.copytree(out_dir, tmp_path / "swapped")
    swapped = tmp_path / "swapped"
    fwd, rev = graphs
    (swapped / f"{fwd}.onnx").replace(swapped / "tmp.onnx")
    (swapped / f"{rev}.onnx").replace(swapped / f"{fwd}.onnx")
    (swapped / "tmp.onnx").replace(swapped / f"{rev}.onnx")
    x = windows(len(names), 1280)
    with torch.no_grad():
        latent = model.encode(x, names).numpy()
    assert max_err(load(swapped).latent(x), latent) > 1e-2


def _group_norm_inputs(model, x) -> list[torch.Tensor]:
    """The input of each time-path GroupNorm of the PyTorch model on windows x: (B, ch, C*S, W) each."""
    seen = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
             for m in model.patch_embed.proj_in if isinstance(m, torch.nn.GroupNorm)]
    try:
        model.patch_embed(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_stage_outputs_match_pytorch_intermediates(exports):
    """The window's GroupNorm statistics (streamed front end), channel-unified latents and every
    block's output equal the PyTorch model's."""
    model, names, out_dir, manifest = exports(*SMALL)
    x = windows(len(names), 1280)
    got = load(out_dir).stages(x)
    with torch.no_grad():
        inputs = _group_norm_inputs(model, x)
        tokens = model.tokens(x, model.position_embedding([names] * len(x), x.device))
        z = model.unify(tokens)[0]
        expected = {"z0": z}
        for i, (block, norm) in enumerate(zip(model.mamba_blocks, model.norm_layers)):
            z = z + block(norm(z))
            expected[f"z{i + 1}"] = z
    assert manifest.latent_buffer == f"z{model.config.n_blocks}"
    assert "tokens" not in got      # no (S, C, E) buffer: each patch goes straight into the unification
    norms = [m for m in model.patch_embed.proj_in if isinstance(m, torch.nn.GroupNorm)]
    for k, (norm, h) in enumerate(zip(norms, inputs), start=1):
        g = h.double().reshape(len(x), norm.num_groups, -1)
        mean, var = g.mean(-1), g.var(-1, unbiased=False)
        stats = got[f"gn{k}"][:, 0]                                   # (B, G, 2): mean, sqrt(var + eps)
        assert max_err(stats[..., 0], mean) <= TOL_TOKENS, k
        assert max_err(stats[..., 1], torch.sqrt(var + norm.eps)) <= TOL_TOKENS, k
    for name in ("z0", "z1", "z2"):
        assert max_err(got[name], expected[name]) <= TOL_LATENT, name


def test_window_front_end_tokens_match_pytorch(exports):
    """front_end="window": the whole-window tokens buffer equals the model's tokens."""
    model, names, out_dir, manifest = exports(*WINDOW)
    x = windows(len(names), 640)
    with torch.no_grad():
        tokens = model.tokens(x, model.position_embedding([names] * len(x), x.device))
    assert [(s.graph, s.loop) for s in manifest.schedule][:2] == [("frontend", "once"), ("unify", "forward")]
    assert max_err(load(out_dir).stages(x)["tokens"], tokens) <= TOL_TOKENS


def test_step_graph_is_one_mamba_step(exports):
    """block0_rev on a random token and non-zero state equals LayerNorm + Mamba.step of the
    model (the reference recurrence), state outputs included."""
    model, _, out_dir, _ = exports(*SMALL, mamba_form="step")
    mamba, norm = model.mamba_blocks[0].mamba_rev, model.norm_layers[0]
    g = torch.Generator().manual_seed(3)
    x_t, acc = torch.randn(1, mamba.d_model, generator=g), torch.randn(1, mamba.d_model, generator=g)
    state = MambaState(torch.randn(1, mamba.d_inner, mamba.d_conv, generator=g),
                       torch.randn(1, mamba.d_inner, mamba.d_state, generator=g))
    with torch.no_grad():
        y, new_state = mamba.step(norm(x_t), state)
    session = ort.InferenceSession(str(out_dir / "block0_rev.onnx"), providers=["CPUExecutionProvider"])
    acc_out, conv_out, ssm_out = session.run(["acc_out", "conv_state_out", "ssm_state_out"], {
        "x_t": x_t.numpy(), "acc_in": acc.numpy(),
        "conv_state": state.conv_state.numpy(), "ssm_state": state.ssm_state.numpy()})
    # one step, O(10) ops: a few ulp of values of order 1
    assert max_err(acc_out, acc + y) <= 1e-6
    assert max_err(conv_out[..., :-1], state.conv_state[..., 1:]) == 0.0   # the shift is a copy: exact
    assert max_err(conv_out, new_state.conv_state) <= 1e-6                  # the new column is in_proj(x)
    assert max_err(ssm_out, new_state.ssm_state) <= 1e-6


def test_graphs_are_valid_onnx_for_ort_and_tvm(exports):
    """Checker (full), IR version and opset both runtimes take, no control flow, standard domain."""
    for config, montage, n_samples in DEFAULT_CASES:
        _, _, out_dir, manifest = exports(config, montage, n_samples)
        for g in manifest.graphs:
            model = onnx.load(out_dir / g.file)
            onnx.checker.check_model(model, full_check=True)
            assert model.ir_version == IR_VERSION
            assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
            ops = {n.op_type for n in model.graph.node}
            assert not ops & {"Loop", "Scan", "If"}, g.name
            assert all(n.domain == "" for n in model.graph.node), g.name


def test_tvm_imports_every_graph(exports):
    """TVM 0.27's Relax ONNX importer accepts every exported op (import only, no compilation)."""
    from tvm.relax.frontend.onnx import from_onnx

    for config, montage, n_samples in DEFAULT_CASES:
        _, _, out_dir, manifest = exports(config, montage, n_samples)
        for g in manifest.graphs:
            mod = from_onnx(onnx.load(out_dir / g.file), keep_params_in_input=False)
            assert "main" in [gv.name_hint for gv in mod.functions], g.name


def test_manifest_describes_the_schedule(exports):
    model, names, out_dir, manifest = exports(*SMALL, mamba_form="step")
    assert manifest.mamba_form == "step"
    c = model.config
    assert Manifest.load(out_dir) == manifest
    on_disk = json.loads((out_dir / "manifest.json").read_text())
    assert on_disk["n_channels"] == 16 and on_disk["n_patches"] == 32 and on_disk["n_classes"] == N_CLASSES
    assert manifest.channel_names == tuple(names) and manifest.n_samples == 1280
    assert manifest.config == c.to_dict()
    assert [(s.graph, s.loop) for s in manifest.schedule] == [
        ("frontend_stats1", "forward"), ("frontend_gn1", "once"), ("frontend_stats2", "forward"), ("frontend_gn2", "once"),
        ("frontend_stats3", "forward"), ("frontend_gn3", "once"), ("frontend", "forward"),
        ("block0_fwd", "forward"), ("block0_rev", "reverse"), ("block1_fwd", "forward"), ("block1_rev", "reverse"),
        ("head_step", "forward"), ("head_out", "once")]
    # the four encoder step graphs differ only in weights; nothing else shares their structure
    groups = manifest.shared_structures()
    assert sorted(groups[manifest.graph("block0_fwd").structure]) == ["block0_fwd", "block0_rev", "block1_fwd", "block1_rev"]
    assert sorted(groups[manifest.graph("frontend_gn1").structure]) == ["frontend_gn1", "frontend_gn2", "frontend_gn3"]
    assert len(groups) == 8
    d_inner = c.expand * c.d_model
    assert manifest.buffer("block1_rev_ssm_state").shape == (1, d_inner, c.d_state)
    assert manifest.buffer("block1_rev_conv_state").shape == (1, d_inner, c.d_conv)
    # every front-end pass reads patch t of the window: 16 channels x 40 samples
    G = 4                                  # GroupNorm(4) in the time path
    front = manifest.graph("frontend")
    assert [(t.name, t.shape) for t in front.inputs] == [("patch", (1, 16, c.patch_size)), ("gn1", (1, G, 2)),
                                                         ("gn2", (1, G, 2)), ("gn3", (1, G, 2))]
    assert front.outputs[0].shape == (1, c.d_model)
    patch_reads = [(s.graph, b.port) for s in manifest.schedule for b in s.inputs if b.patch]
    assert patch_reads == [("frontend_stats1", "patch"), ("frontend_stats2", "patch"), ("frontend_stats3", "patch"),
                           ("frontend", "patch")]
    assert all(b.buffer == "window" for s in manifest.schedule for b in s.inputs if b.patch)
    # weights keep names that say which module they belong to
    init = {t.name for t in onnx.load(out_dir / "block1_rev.onnx").graph.initializer}
    assert {"norm.weight", "mamba.in_proj.weight", "mamba.A", "mamba.D", "mamba.conv_weight"} <= init
    assert manifest.graph("block1_rev").sources == ("norm_layers.1", "mamba_blocks.1.mamba_rev")
    # the checkpoint it came from
    path = manifest.checkpoint["path"]
    assert manifest.checkpoint["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_stored_front_end_schedule(exports):
    """front_end="stored": conv k runs once per patch into h_k (S, ch, C, W), the next pass reads
    row t of it; only conv 1 and the last pass read the window's patch."""
    model, names, out_dir, manifest = exports(*STORED)
    c, S, C = model.config, manifest.n_patches, len(names)
    ch, G = c.embed_dim // 4, 4
    assert [(s.graph, s.loop) for s in manifest.schedule[:7]] == [
        ("frontend_conv1", "forward"), ("frontend_gn1", "once"), ("frontend_conv2", "forward"), ("frontend_gn2", "once"),
        ("frontend_conv3", "forward"), ("frontend_gn3", "once"), ("frontend", "forward")]
    for k in (1, 2, 3):
        assert manifest.buffer(f"h{k}").shape == (S, ch, C, 4)
        stage = manifest.schedule[2 * (k - 1)]
        assert {(b.port, b.buffer, b.row) for b in stage.outputs} == {("h_t", f"h{k}", True), ("rows_t", f"gn{k}_rows", True)}
        if k > 1:
            assert {(b.port, b.buffer, b.row) for b in stage.inputs} == {("x", f"h{k - 1}", True), (f"gn{k - 1}", f"gn{k - 1}", False)}
        convs = [n for n in onnx.load(out_dir / manifest.graph(f"frontend_conv{k}").file).graph.node if n.op_type == "Conv"]
        assert len(convs) == 1
    front = manifest.graph("frontend")
    assert [(t.name, t.shape) for t in front.inputs] == [("patch", (1, C, c.patch_size)), ("h3", (1, ch, C, 4)),
                                                         ("gn3", (1, G, 2))]
    patch_reads = [(s.graph, b.port) for s in manifest.schedule for b in s.inputs if b.patch]
    assert patch_reads == [("frontend_conv1", "x"), ("frontend", "patch")]


@pytest.mark.parametrize("front_end", ["streamed", "stored"])
def test_deployed_macs_count_the_recomputed_convolutions(exports, front_end):
    """lumamba.profile.deployed_macs of the streamed front end = the model's time-path convolution
    MACs plus what its statistics passes compute again, counted here from the exported Conv nodes
    and the number of calls of each graph per window; the stored front end computes none again."""
    from lumamba.profile import deployed_macs, macs

    model, names, out_dir, manifest = exports(*(SMALL if front_end == "streamed" else STORED[:3]), front_end)
    calls = {"once": 1, "forward": manifest.n_patches, "reverse": manifest.n_patches}
    conv_macs = 0
    for stage in manifest.schedule:
        g = onnx.shape_inference.infer_shapes(onnx.load(out_dir / manifest.graph(stage.graph).file)).graph
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*g.value_info, *g.output)}
        weights = {t.name: list(t.dims) for t in g.initializer}
        for n in (n for n in g.node if n.op_type == "Conv"):
            conv_macs += calls[stage.loop] * int(np.prod(shapes[n.output[0]])) * int(np.prod(weights[n.input[1]][1:]))
    c, C, T = model.config, len(names), manifest.n_samples
    extra = deployed_macs(c, C, T, N_CLASSES, front_end=front_end) - deployed_macs(c, C, T, N_CLASSES, front_end="window")
    assert (extra > 0 if front_end == "streamed" else extra == 0) and conv_macs == macs(c, C, T, N_CLASSES)["time_patch_embed"] + extra


def test_manifest_describes_the_window_form(exports):
    """Per Mamba: pre over all tokens, the scan per token (reverse for a block's reverse
    direction, which is not flipped), post over all tokens; the head's mean and fc3 in head_post."""
    model, _, out_dir, manifest = exports(*SMALL)
    c, S = model.config, manifest.n_patches
    assert manifest.mamba_form == "window"
    mambas = [(f"block{i}_{d}", "forward" if d == "fwd" else "reverse") for i in range(2) for d in ("fwd", "rev")]
    front = [(s.graph, s.loop) for s in manifest.schedule if s.graph.startswith("frontend")]
    assert front and [(s.graph, s.loop) for s in manifest.schedule] == [
        *front,
        *[(f"{name}_{part}", loop if part == "scan" else "once") for name, loop in [*mambas, ("head", "forward")]
          for part in ("pre", "scan", "post")]]
    # both blocks' graphs of a kind share one structure; the directions' pre graphs differ (conv side)
    groups = {tuple(sorted(g)) for g in manifest.shared_structures().values()}
    assert {("block0_fwd_pre", "block1_fwd_pre"), ("block0_rev_pre", "block1_rev_pre"),
            ("block0_fwd_scan", "block0_rev_scan", "block1_fwd_scan", "block1_rev_scan"),
            ("block0_fwd_post", "block0_rev_post", "block1_fwd_post", "block1_rev_post")} <= groups
    assert manifest.graph("block1_rev_pre").kind == "encoder_pre_rev"
    assert manifest.graph("block1_rev_pre").sources == ("norm_layers.1", "mamba_blocks.1.mamba_rev")
    assert manifest.graph("head_post").sources == ("classifier.mamba_1", "classifier.fc3")
    d_inner, head_inner = c.expand * c.d_model, c.head_expand * c.head_hidden
    for name, width in (("u", d_inner), ("delta", d_inner), ("gate", d_inner), ("y", d_inner), ("B", c.d_state)):
        assert manifest.buffer(f"block1_rev_{name}").shape == (S, width)
    assert manifest.buffer("head_y").shape == (S, head_inner)
    assert manifest.buffer("block1_rev_ssm_state").shape == (1, d_inner, c.d_state)
    assert not [b for b in manifest.buffers if "conv_state" in b.name or b.name == "head_acc"]
    scan = next(s for s in manifest.schedule if s.graph == "block0_rev_scan")
    assert [(b.port, b.buffer, b.row) for b in scan.inputs] == [
        ("u_t", "block0_rev_u", True), ("delta_t", "block0_rev_delta", True), ("B_t", "block0_rev_B", True),
        ("C_t", "block0_rev_C", True), ("ssm_state", "block0_rev_ssm_state", False)]
    assert scan.zero == ("block0_rev_ssm_state",)
    # the projections run over all S tokens (matrix-matrix); the conv is float ops, not a Conv
    pre = onnx.load(out_dir / "block0_fwd_pre.onnx").graph
    assert [i.dims for i in pre.initializer if i.name == "mamba.in_proj.weight"] == [[2 * d_inner, c.d_model]]
    assert [d.dim_value for d in pre.input[0].type.tensor_type.shape.dim] == [S, c.d_model]
    assert "Conv" not in {n.op_type for n in pre.node}


def test_window_and_step_forms_agree(exports):
    """The two forms of one model give the same buffers: every block's output and the logits.
    Same float ops in another grouping (a Gemm over S tokens vs S Gemms of one), so a few ulp."""
    model, names, window_dir, _ = exports(*SMALL)
    _, _, step_dir, _ = exports(*SMALL, mamba_form="step")
    x = windows(len(names), SMALL[2])
    window, step = load(window_dir).stages(x), load(step_dir).stages(x)
    for name in ("z1", "z2"):
        assert max_err(window[name], step[name]) <= 1e-5, name
    assert max_err(load(window_dir)(x), load(step_dir)(x)) <= 1e-6


def test_manifest_records_the_form(exports, tmp_path):
    """The manifest says which form it is; one written before the field existed is the step form,
    and an unknown form is refused on load."""
    _, _, out_dir, manifest = exports(*SMALL)
    assert manifest.mamba_form == "window" and Manifest.load(out_dir).mamba_form == "window"
    d = json.loads((out_dir / "manifest.json").read_text())
    assert Manifest.from_dict({k: v for k, v in d.items() if k != "mamba_form"}).mamba_form == "step"
    (tmp_path / "manifest.json").write_text(json.dumps({**d, "mamba_form": "chunks"}))
    with pytest.raises(ValueError, match="manifest.json: mamba_form must be one of 'window', 'step', 'chunk', got 'chunks'"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**d, "mamba_form": "chunk"}))   # without its mamba_chunk
    with pytest.raises(ValueError, match="manifest.json: mamba_chunk must be a positive integer in the chunk"):
        Manifest.load(tmp_path)


def test_window_form_keeps_the_layer_names(exports):
    """Every quantisable node of the Mamba graphs of either form is named after its model
    parameter, and both forms have the same layers (what quantisation configs and precision plans
    refer to)."""
    from lumamba.quant.convert import candidates

    layers = {}
    for form in ("window", "step"):
        _, _, out_dir, manifest = exports(*SMALL, mamba_form=form)
        found = [c for g in manifest.graphs if g.name not in ("frontend", "unify")
                 for c in candidates(onnx.load(out_dir / g.file), g)]
        assert all(c.learned for c in found), [c.layer for c in found if not c.learned]
        layers[form] = sorted(c.layer for c in found)
    assert layers["window"] == layers["step"]
    assert {"mamba_blocks.1.mamba_rev.x_proj", "classifier.mamba_1.out_proj", "classifier.fc3"} <= set(layers["window"])


def test_position_embedding_is_folded_for_the_montage(exports):
    """The montage's electrode-position embedding is a constant of the front-end, not an input."""
    model, names, out_dir, manifest = exports(*SMALL)
    frontend = onnx.load(out_dir / "frontend.onnx")
    assert [i.name for i in frontend.graph.input] == ["patch", "gn1", "gn2", "gn3"]   # positions are not an input
    folded, = [onnx.numpy_helper.to_array(t) for t in frontend.graph.initializer
               if t.name.startswith("position_embedding")]
    with torch.no_grad():
        expected = model.position_embedding([names], torch.device("cpu"))[0]
    np.testing.assert_array_equal(folded.reshape(expected.shape), expected.numpy())


def test_runner_batches_and_optimisation_levels_agree(exports):
    model, names, out_dir, _ = exports(*SMALL)
    x = windows(len(names), 1280, batch=3)
    basic, off = load(out_dir), load(out_dir, optimization="off")
    logits = basic(x)
    assert logits.shape == (3, N_CLASSES) and logits.dtype == np.float32
    np.testing.assert_array_equal(basic(x[1:2].numpy()), logits[1:2])   # samples are independent
    assert max_err(off(x), logits) <= 1e-6
    assert basic.latent(x).shape == (3, 32, model.config.d_model)


def test_runner_rejects_bad_inputs(exports):
    _, names, out_dir, _ = exports(*SMALL)
    runner = load(out_dir)
    good = windows(16, 1280).numpy()
    with pytest.raises(ValueError, match=r"shape \(B, C, T\)"):
        runner(good[0])
    with pytest.raises(ValueError, match="15 channels but this export is for 16 .C3, C4,"):
        runner(good[:, :15])
    with pytest.raises(ValueError, match="640 samples per channel but this export is for windows of 1280"):
        runner(good[..., :640])
    bad = good.copy()
    bad[1, 3, 17] = np.nan
    with pytest.raises(ValueError, match=r"non-finite .*sample 1, channel 'F4', time 17"):
        runner(bad)
    with pytest.raises(ValueError, match="floating point"):
        runner(good.astype(np.int32))
    with pytest.raises(ValueError, match="numpy array or torch tensor"):
        runner(good.tolist())
    with pytest.raises(ValueError, match="optimization must be one of"):
        load(out_dir, optimization="all")


def test_load_rejects_missing_or_foreign_exports(exports, tmp_path):
    _, _, out_dir, _ = exports(*SMALL)
    with pytest.raises(FileNotFoundError, match="no ONNX export manifest"):
        load(tmp_path)
    d = json.loads((out_dir / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**d, "format_version": 99}))
    with pytest.raises(ValueError, match="version=99"):
        load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(FileNotFoundError, match="frontend_stats1.onnx: graph 'frontend_stats1'"):
        load(tmp_path)
    front = next(s for s in d["schedule"] if s["graph"] == "frontend")
    for patch, match in (({"port": "patch", "buffer": "z0", "row": True}, "port 'patch' has shape"),
                         ({"port": "patch", "buffer": "z0", "patch": True}, "patch binding 'patch' must be an input"),
                         ({"port": "patch", "buffer": "window", "patch": True, "row": True}, "not a row binding")):
        broken = {**d, "schedule": [{**front, "inputs": [patch, *front["inputs"][1:]]}]}
        (tmp_path / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=match):
            load(tmp_path)
    once = {**front, "loop": "once"}
    (tmp_path / "manifest.json").write_text(json.dumps({**d, "schedule": [once]}))
    with pytest.raises(ValueError, match="patch binding 'patch' outside a loop"):
        load(tmp_path)


def test_export_rejects_bad_arguments(tmp_path):
    model = make_model("micro")
    names = list(MONTAGES["tcp22"])
    with pytest.raises(ValueError, match="positive multiple of the patch size 40"):
        export_onnx(model, names, 650, tmp_path)
    with pytest.raises(ChannelError, match="XYZ"):
        export_onnx(model, names[:-1] + ["XYZ"], 640, tmp_path)
    with pytest.raises(ValueError, match="list of channel names"):
        export_onnx(model, "FP1-F7", 640, tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_onnx(model, names, 640, tmp_path, checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="front_end must be one of"):
        export_onnx(model, names, 640, tmp_path, front_end="patches")
    assert not list(tmp_path.iterdir())   # nothing written before the arguments are known good


def test_frontend_module_matches_model_tokens():
    """The front-end step module (what the frontend graph is exported from) is the model's tokens():
    the same function (float64: to 1e-12); in float32 only the GroupNorm statistics are summed in
    another order (step_modules.blocked_group_norm), a few ulp."""
    model = make_model("micro")
    names = list(MONTAGES["apava16"])
    x = windows(16, 640, batch=1)
    with torch.no_grad():
        for m, xx, atol in ((model, x, 1e-5), (copy.deepcopy(model).double(), x.double(), 1e-12)):
            pos = m.position_embedding([names], xx.device)
            expected = m.tokens(xx, pos)[0]
            got = Frontend(m, pos[0])(xx)
            torch.testing.assert_close(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("fill", ["random", "flat"])
def test_streamed_frontend_modules_match_model(fill):
    """The streamed front end's modules, run as the schedule runs them (three statistics passes over
    the patches, then one pass into the unification), are the model's tokens() + unify(): the same
    function (float64: to 1e-12) on random and flat windows; float32 within a few ulp."""
    model = make_model("micro")
    names = list(MONTAGES["apava16"])
    x = windows(16, 640, batch=1) if fill == "random" else torch.full((1, 16, 640), 0.7)
    P = model.config.patch_size
    with torch.no_grad():
        for m, xx, atol in ((model, x, 1e-5), (copy.deepcopy(model).double(), x.double(), 1e-12)):
            pos = m.position_embedding([names], xx.device)
            expected = m.unify(m.tokens(xx, pos))[0][0]                       # (S, Q*E)
            patches = [xx[:, :, t:t + P] for t in range(0, xx.shape[-1], P)]
            stats = []
            for k, norm in enumerate([n for n in m.patch_embed.proj_in if isinstance(n, torch.nn.GroupNorm)], 1):
                rows = torch.cat([GroupNormStats(m, k)(p, *stats) for p in patches])   # (S, G, 2)
                stats.append(CombineStats(norm.eps)(rows))
            front = FrontendPatch(m, pos[0])
            got = torch.cat([front(p, *stats) for p in patches])
            torch.testing.assert_close(got, expected, rtol=0, atol=atol)


def test_encoder_step_module_matches_mamba_step():
    model = make_model("micro")
    mamba, norm = model.mamba_blocks[0].mamba_fwd, model.norm_layers[0]
    g = torch.Generator().manual_seed(5)
    x, acc = torch.randn(1, mamba.d_model, generator=g), torch.randn(1, mamba.d_model, generator=g)
    state = MambaState(torch.randn(1, mamba.d_inner, mamba.d_conv, generator=g),
                       torch.randn(1, mamba.d_inner, mamba.d_state, generator=g))
    with torch.no_grad():
        y, ref = mamba.step(norm(x), state)
        acc_out, conv, ssm = EncoderStep(norm, mamba)(x, acc, *state)
    torch.testing.assert_close(acc_out, acc + y, rtol=0, atol=1e-6)
    torch.testing.assert_close(conv, ref.conv_state, rtol=0, atol=0)
    torch.testing.assert_close(ssm, ref.ssm_state, rtol=0, atol=1e-6)


def test_linear_head_export(tmp_path):
    config = dataclasses.replace(CONFIGS["micro"], head="linear")
    model = make_model(config)
    names = list(MONTAGES["tcp20"])
    manifest = export_onnx(model, names, 640, tmp_path)
    assert [s.graph for s in manifest.schedule][-1] == "head_out"
    assert "head_step" not in [g.name for g in manifest.graphs]
    check_parity(model, names, tmp_path, 640, "micro (linear head) tcp20 T=640")


@pytest.mark.slow
def test_encoder_only_export(tmp_path):
    model = make_model("micro", n_classes=0)
    names = list(MONTAGES["tcp22"])
    manifest = export_onnx(model, names, 640, tmp_path)
    assert manifest.logits_buffer is None
    runner = load(tmp_path)
    x = windows(22, 640)
    with torch.no_grad():
        latent = model.encode(x, names).numpy()
    assert max_err(runner.latent(x), latent) <= TOL_LATENT
    with pytest.raises(ValueError, match="encoder-only"):
        runner(x)


def test_importing_lumamba_export_is_cheap():
    code = ("import sys, lumamba.export as e; heavy = {'onnxruntime', 'onnxscript', 'tvm', 'onnx'} & set(sys.modules);"
            "assert not heavy, heavy; assert callable(e.export_onnx) and callable(e.load)")
    subprocess.run([sys.executable, "-c", code], check=True)
