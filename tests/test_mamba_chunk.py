"""The chunked window form of a Mamba (export/onnx/mamba_chunk.py): per chunk of C tokens pre +
scan + post, with the conv context and the scan state carried from chunk to chunk, is the model's
Mamba, for chunks that divide S or not, of 1 token and of more than S.

As in test_mamba_window.py, the reference is `Mamba.forward` (the parallel scan): the same function
to 1e-12 in float64, to 1e-5 in float32 (another summation order, a few ulp per op on values of
order 1). A conv context dropped or taken from the wrong side moves the outputs by 1e-2 or more
(checked below). The ONNX export is checked against PyTorch here, its int8 C bit for bit in
test_int8_export.py (test_cli_host_int8_verify[chunk]).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_onnx_export import TOL_LATENT, TOL_LOGITS, make_model, max_err, windows

from lumamba.export import cli
from lumamba.export.onnx.exporter import export_onnx
from lumamba.export.onnx.manifest import Binding, Manifest
from lumamba.export.onnx.mamba_chunk import (EncoderChunkPre, HeadChunkPost, HeadChunkPre, chunks)
from lumamba.export.onnx.mamba_window import EncoderPost, ScanStep
from lumamba.export.onnx.ort_runner import load
from lumamba.montages import MONTAGES

S = 7


def _chunked_mamba(pre, mamba, x, chunk: int, reverse: bool, post, post_args):
    """Run the chunks as the exporter's schedule does: per chunk pre, the scan token by token
    (the chunk's last token first when reverse), post; `post_args(a, b)` are post's extra inputs."""
    ctx = x.new_zeros(mamba.d_conv - 1, mamba.d_inner)
    h = x.new_zeros(1, mamba.d_inner, mamba.d_state)
    scan = ScanStep(mamba).to(x.dtype)
    outs = {}
    for a, b in chunks(len(x), chunk, reverse):
        u, delta, B, C, gate, ctx = pre(x[a:b], ctx)
        y = torch.empty_like(u)
        for t in (reversed(range(b - a)) if reverse else range(b - a)):
            y_t, h = scan(u[t:t + 1], delta[t:t + 1], B[t:t + 1], C[t:t + 1], h)
            y[t] = y_t[0]
        outs[a] = post(y, gate, *post_args(a, b))
    return outs


def test_chunks_cover_the_window_in_order():
    assert chunks(7, 3, False) == [(0, 3), (3, 6), (6, 7)]
    assert chunks(7, 3, True) == [(6, 7), (3, 6), (0, 3)]
    assert chunks(4, 16, False) == [(0, 4)]
    assert chunks(3, 1, True) == [(2, 3), (1, 2), (0, 1)]


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("direction", ["fwd", "rev"])
@pytest.mark.parametrize("chunk", [1, 2, 3, S, 16])   # 1 token; a last chunk of 1 / of 1 of 3; whole; > S
def test_chunked_direction_is_the_models_mamba(direction, dtype, atol, chunk):
    """fwd: residual + Mamba(LN(x)); rev: residual + Mamba(LN(x) flipped) flipped back, chunk by chunk."""
    model = copy.deepcopy(make_model("micro")).to(dtype)
    norm, mamba = model.norm_layers[0], getattr(model.mamba_blocks[0], f"mamba_{direction}")
    g = torch.Generator().manual_seed(4)
    x, residual = (torch.randn(S, mamba.d_model, generator=g, dtype=dtype) for _ in range(2))

    def run(causal: bool, keep_context: bool = True):
        pre = EncoderChunkPre(norm, mamba, causal)
        if not keep_context:      # every chunk sees zero padding instead of its neighbour's tokens
            inner = pre

            def pre(x, ctx):
                return inner(x, torch.zeros_like(ctx))
        outs = _chunked_mamba(pre, mamba, x, chunk, direction == "rev", EncoderPost(mamba),
                              lambda a, b: (residual[a:b],))
        return torch.cat([outs[a] for a in sorted(outs)])

    with torch.no_grad():
        h = norm(x)[None]
        expected = residual + (mamba(h)[0] if direction == "fwd" else mamba(h.flip(1))[0].flip(0))
        got = run(direction == "fwd")
        wrong_side = run(direction != "fwd")
        no_context = run(direction == "fwd", keep_context=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    if chunk > 1:   # one token per chunk: the other side's context, carried in this order, is this side's
        assert (wrong_side - expected).abs().max() > 1e-2
    if chunk < S:       # with one chunk there is no neighbour to take the context from
        assert (no_context - expected).abs().max() > 1e-2


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_chunked_head_is_the_models_mamba_head(chunk):
    """The chunks' post stages sum out_proj(y * gate) over all tokens: fc3(sum / S) is MambaHead.forward."""
    model = copy.deepcopy(make_model("micro")).to(torch.float64)
    head = model.classifier
    z = torch.randn(S, model.config.d_model, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    post = HeadChunkPost(head)
    acc = [z.new_zeros(1, head.fc1.out_features)]

    def post_args(a, b):
        return (acc[-1],)

    with torch.no_grad():
        def step(y, gate, acc_in):
            acc.append(post(y, gate, acc_in))
            return acc[-1]
        _chunked_mamba(HeadChunkPre(head), head.mamba_1, z, chunk, False, step, post_args)
        logits = head.fc3(acc[-1] / S)
        expected = head(z[None])
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def chunk_export(tmp_path_factory):
    """micro, tcp20, 640 samples (S = 16) in chunks of 3: five full chunks sharing their graphs and
    a last chunk of 1 token with graphs of its own."""
    model = make_model("micro")
    names = list(MONTAGES["tcp20"])
    out = tmp_path_factory.mktemp("chunk3")
    return model, names, out, export_onnx(model, names, 640, out, mamba_form="chunk", mamba_chunk=3)


def test_chunk_export_matches_pytorch(chunk_export):
    model, names, out, manifest = chunk_export
    assert manifest.mamba_form == "chunk" and manifest.mamba_chunk == 3 and manifest.n_patches == 16
    # per Mamba one pre, scan and post graph for the full chunks, a pre and post for the last one
    assert {g.name for g in manifest.graphs if g.name.startswith("block0_fwd")} == {
        "block0_fwd_pre", "block0_fwd_scan", "block0_fwd_post", "block0_fwd_pre_tail", "block0_fwd_post_tail"}
    assert sum(s.graph == "block0_fwd_pre" for s in manifest.schedule) == 5
    # the blocks update z0 in place: two (S, d_model) buffers for the encoder, not three
    assert manifest.latent_buffer == "z0" and {b.name for b in manifest.buffers} >= {"z0", "acc"}
    assert not {"z1", "acc0"} & {b.name for b in manifest.buffers}
    x = windows(len(names), 640)
    runner = load(out)
    with torch.no_grad():
        logits, latent = model(x, names).numpy(), model.encode(x, names).numpy()
    assert max_err(runner(x), logits) <= TOL_LOGITS
    assert max_err(runner.latent(x), latent) <= TOL_LATENT
    # the manifest round trip keeps the rows bindings and spans
    assert Manifest.load(out) == manifest


@pytest.mark.slow
def test_chunk_of_one_token_matches_pytorch(tmp_path):
    model, names = make_model("micro"), list(MONTAGES["tcp20"])
    manifest = export_onnx(model, names, 640, tmp_path, mamba_form="chunk", mamba_chunk=1)
    assert not any(g.name.endswith("_tail") for g in manifest.graphs)
    x = windows(len(names), 640)
    with torch.no_grad():
        logits = model(x, names).numpy()
    assert max_err(load(tmp_path)(x), logits) <= TOL_LOGITS


@pytest.mark.parametrize("chunk", [0, -3, True, 2.5, "4"])
def test_bad_chunk_is_rejected(tmp_path, chunk):
    with pytest.raises(ValueError, match=f"mamba_chunk must be a positive number of tokens, got {chunk!r}"):
        export_onnx(make_model("micro"), list(MONTAGES["tcp20"]), 640, tmp_path, mamba_form="chunk",
                    mamba_chunk=chunk)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_bad_chunk_option_names_the_option(value, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["--target", "onnx", "--mamba-form", "chunk", "--mamba-chunk", value])
    assert e.value.code == 2
    assert f"--mamba-chunk: must be a positive integer, got {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, form, chunk", [
    (["--target", "onnx"], "step", 4),
    (["--target", "cortex-m"], "step", 4),
    (["--target", "cortex-m", "--int8"], "chunk", 4),        # int8 firmware: the chunk form by default
    (["--target", "cortex-m", "--int8", "--mamba-form", "step"], "step", 4),
    (["--target", "host", "--mamba-form", "chunk", "--mamba-chunk", "8"], "chunk", 8),
])
def test_mamba_form_defaults(argv, form, chunk):
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    cli._mamba_form_defaults(parser, args)
    assert (args.mamba_form, args.mamba_chunk) == (form, chunk)


def test_chunk_option_without_the_chunk_form_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--target", "cortex-m", "--int8", "--mamba-form", "step", "--mamba-chunk", "8"])
    assert e.value.code == 2
    assert "--mamba-chunk: only with --mamba-form chunk (the Mamba form is step)" in capsys.readouterr().err


def _replace_stage(manifest: Manifest, index: int, **changes) -> Manifest:
    import dataclasses
    schedule = list(manifest.schedule)
    schedule[index] = dataclasses.replace(schedule[index], **changes)
    return dataclasses.replace(manifest, schedule=tuple(schedule))


def test_manifest_rejects_bad_spans_and_rows(chunk_export):
    import dataclasses
    manifest = chunk_export[3]
    scan = next(i for i, s in enumerate(manifest.schedule) if s.graph == "block0_fwd_scan")
    pre = next(i for i, s in enumerate(manifest.schedule) if s.graph == "block0_fwd_pre")
    for span in ((0, 17), (3, 3), (-1, 2), (0, 4)):   # past S; empty; negative; past the chunk buffers' 3 rows
        with pytest.raises(ValueError, match=r"span|row binding"):
            _replace_stage(manifest, scan, span=span).validate()
    with pytest.raises(ValueError, match="span"):
        _replace_stage(manifest, pre, span=(0, 3)).validate()      # a span on a stage run once
    x = next(b for b in manifest.schedule[pre].inputs if b.port == "x")
    others = tuple(b for b in manifest.schedule[pre].inputs if b.port != "x")
    for rows in ((14, 17), (0, 4), (2, 2)):    # past the buffer; not the port's 3 rows; empty
        bad = dataclasses.replace(x, rows=rows)
        with pytest.raises(ValueError, match=r"rows|shape"):
            _replace_stage(manifest, pre, inputs=(bad, *others)).validate()
    with pytest.raises(ValueError, match="mamba_chunk must be a positive integer"):
        dataclasses.replace(manifest, mamba_chunk=None).validate()
    with pytest.raises(ValueError, match="mamba_chunk must be a positive integer"):
        dataclasses.replace(manifest, mamba_form="window").validate()
    assert Binding("x", "z0", rows=(0, 3)) == x or x.rows is not None
