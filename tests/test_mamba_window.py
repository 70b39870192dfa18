"""The window form of a Mamba (export/onnx/mamba_window.py), as PyTorch modules: pre (over all
tokens) + scan (per token, forward or reverse) + post (over all tokens) is the model's Mamba.

The reference is `Mamba.forward` (the parallel scan), a different algorithm from the window form's
token loop. In float64 the two are the same function to 1e-12; in float32 they sum in another
order (parallel prefix scan vs the recurrence, conv taps vs torch's Conv1d), a few ulp per op on
values of order 1, so 1e-5. A conv on the wrong side, a tap order reversed, a scan in the wrong
direction or a missing gate moves the outputs by 1e-2 or more (checked below).
The ONNX exports of both forms are tested against PyTorch in test_onnx_export.py, their int8 C
bit for bit in test_int8_export.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
from test_onnx_export import make_model

from lumamba.export import cli
from lumamba.export.onnx.exporter import export_onnx
from lumamba.export.onnx.mamba_window import EncoderPost, EncoderPre, HeadPost, HeadPre, ScanStep
from lumamba.montages import MONTAGES

S = 7   # odd and more than d_conv: every tap meets the zero padding at one end and real tokens elsewhere


def _window_mamba(pre, mamba, x, reverse: bool, post, *post_args):
    """Run pre, then the scan token by token (t = S-1..0 when reverse), then post."""
    u, delta, B, C, gate = pre(x)
    scan = ScanStep(mamba).to(x.dtype)
    h = x.new_zeros(1, mamba.d_inner, mamba.d_state)
    y = torch.empty_like(u)
    for t in (reversed(range(len(x))) if reverse else range(len(x))):
        y_t, h = scan(u[t:t + 1], delta[t:t + 1], B[t:t + 1], C[t:t + 1], h)
        y[t] = y_t[0]
    return post(y, gate, *post_args)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("direction", ["fwd", "rev"])
@pytest.mark.parametrize("n_tokens", [S, 2, 1])   # fewer tokens than d_conv = 4: some taps see only padding
def test_encoder_direction_is_the_models_mamba(direction, dtype, atol, n_tokens):
    """fwd: residual + Mamba(LN(x)); rev, in original token order with the anti-causal conv and
    the scan from the last token: residual + Mamba(LN(x) flipped) flipped back (BiMamba's rule)."""
    model = copy.deepcopy(make_model("micro")).to(dtype)
    norm, mamba = model.norm_layers[0], getattr(model.mamba_blocks[0], f"mamba_{direction}")
    g = torch.Generator().manual_seed(4)
    x, residual = (torch.randn(n_tokens, mamba.d_model, generator=g, dtype=dtype) for _ in range(2))
    with torch.no_grad():
        h = norm(x)[None]
        expected = residual + (mamba(h)[0] if direction == "fwd" else mamba(h.flip(1))[0].flip(0))
        got = _window_mamba(EncoderPre(norm, mamba, causal=direction == "fwd"), mamba, x, direction == "rev",
                            EncoderPost(mamba), residual)
        # the wrong conv side for this direction is far off: the tolerance sees wiring errors
        wrong = _window_mamba(EncoderPre(norm, mamba, causal=direction != "fwd"), mamba, x, direction == "rev",
                              EncoderPost(mamba), residual)
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    if n_tokens > 1:      # one token: only the unshifted tap reaches it, on either side
        assert (wrong - expected).abs().max() > 1e-2


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_head_is_the_models_mamba_head(dtype, atol):
    """head_pre + scan + head_post (mean over time and fc3 folded in) is MambaHead.forward; per
    token (out_proj(y * gate) before the mean) it is the head's Mamba, whose scan runs forwards."""
    model = copy.deepcopy(make_model("micro")).to(dtype)
    head = model.classifier
    z = torch.randn(S, model.config.d_model, generator=torch.Generator().manual_seed(6), dtype=dtype)

    def per_token(y, gate):
        return head.mamba_1.out_proj(y * gate)

    with torch.no_grad():
        expected = head.mamba_1(head.activation1(head.fc1(z))[None])[0]
        got = _window_mamba(HeadPre(head), head.mamba_1, z, False, per_token)
        backwards = _window_mamba(HeadPre(head), head.mamba_1, z, True, per_token)
        logits = _window_mamba(HeadPre(head), head.mamba_1, z, False, HeadPost(head))
        expected_logits = head(z[None])
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    # with the init's small steps (delta ~1e-3..1e-1) the state adds little to D * u, so the
    # direction of the scan moves the outputs by ~2e-4 here: still 20x the float32 tolerance
    assert (backwards - expected).abs().max() > 1e-4
    assert logits.shape == (1, model.n_classes)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=atol)


def test_bad_mamba_form_is_rejected(tmp_path, capsys):
    model = make_model("micro")
    with pytest.raises(ValueError, match="mamba_form must be one of 'window', 'step', 'chunk', got 'windows'"):
        export_onnx(model, list(MONTAGES["tcp22"]), 640, tmp_path, mamba_form="windows")
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--target", "onnx", "--mamba-form", "chunks"])
    assert "--mamba-form: invalid choice: 'chunks' (choose from 'window', 'step', 'chunk')" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["--target", "onnx"]).mamba_form is None   # chosen in main (test_mamba_chunk)
