"""int8 activation buffers (manifest dtype "int8", quant/buffer_storage.py): the manifest format
and the driver's row conversions against the golden model's quantize / dequantize. The int8
export that uses them (the stored front end, the --int8 default) is checked end to end, bit for
bit on QEMU, the host and the other boards, in test_int8_export.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from lumamba.export.onnx.manifest import BufferSpec, Manifest
from lumamba.export.project.model_driver import _INT8_ROW_FUNCTIONS
from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.quant.fixed_point import dequantize_f32, inverse_scale, quantize_f32


def _manifest_json(buffers: list[dict]) -> dict:
    """A minimal valid manifest with `buffers` (besides the window) and no stages."""
    return {"format": "lumamba-recurrent-onnx", "format_version": 1, "config": {}, "n_classes": 0,
            "channel_names": ["A"], "n_samples": 8, "n_patches": 2, "graphs": [],
            "buffers": [{"name": "window", "shape": [1, 1, 8], "kind": "input"}, *buffers], "schedule": [],
            "input_buffer": "window", "latent_buffer": "window", "logits_buffer": None, "opset": 18,
            "ir_version": 10}


@pytest.mark.parametrize("fields, message", [
    ({"dtype": "int16"}, r"dtype 'int16' is not one of"),
    ({"dtype": "int8", "scale": 0.0, "zero_point": 0}, r"int8 scale must be a positive finite float"),
    ({"dtype": "int8", "scale": float("nan"), "zero_point": 0}, r"int8 scale must be a positive finite float"),
    ({"dtype": "int8", "scale": 0.5, "zero_point": 128}, r"int8 zero_point must be an integer in \[-128, 127\]"),
    ({"dtype": "int8", "scale": 0.5, "zero_point": 1.0}, r"int8 zero_point must be an integer"),
    ({"dtype": "float32", "scale": 0.5}, r"float32 buffer with a scale"),
    ({"dtype": "int8", "scale": 0.5, "zero_point": 3, "kind": "state"}, r"only activation buffers can be int8"),
])
def test_bad_buffer_storage_is_rejected(tmp_path, fields, message):
    buffer = {"name": "h1", "shape": [2, 3], "kind": "activation", **fields}
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest_json([buffer])))
    with pytest.raises(ValueError, match=r"manifest.json: buffer 'h1': " + message):
        Manifest.load(tmp_path)


def test_buffer_storage_round_trip(tmp_path):
    """An int8 buffer keeps its fields through manifest.json; float32 buffers are written as before."""
    d = _manifest_json([{"name": "h1", "shape": [2, 3], "kind": "activation", "dtype": "int8",
                                   "scale": 0.25, "zero_point": -7},
                                  {"name": "z0", "shape": [2, 3], "kind": "activation"}])
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    m = Manifest.load(tmp_path)
    assert m.buffer("h1") == BufferSpec("h1", (2, 3), "activation", "int8", 0.25, -7)
    assert m.buffer("h1").itemsize == 1 and m.buffer("z0").itemsize == 4
    m.save(tmp_path)
    written = json.loads((tmp_path / "manifest.json").read_text())["buffers"]
    assert written[1] == {"name": "h1", "shape": [2, 3], "kind": "activation", "dtype": "int8", "scale": 0.25,
                          "zero_point": -7}
    assert written[2] == {"name": "z0", "shape": [2, 3], "kind": "activation"}
    assert Manifest.load(tmp_path) == m


_ROW_MAIN = r"""
#include <stdio.h>
int main(int argc, char **argv)
{
    static float x[8192], back[8192];
    static int8_t q[8192];
    unsigned inv_bits, scale_bits;
    float inv, scale;
    int zp;
    size_t n;
    if (argc != 4 || sscanf(argv[1], "%x", &inv_bits) != 1 || sscanf(argv[2], "%x", &scale_bits) != 1
            || sscanf(argv[3], "%d", &zp) != 1) {
        return 2;
    }
    memcpy(&inv, &inv_bits, 4u);
    memcpy(&scale, &scale_bits, 4u);
    n = fread(x, sizeof(float), 8192u, stdin);
    quantize_row_s8(x, q, n, inv, (int32_t)zp);
    dequantize_row_s8(q, back, n, scale, (int32_t)zp);
    fwrite(q, 1u, n, stdout);
    fwrite(back, sizeof(float), n, stdout);
    return 0;
}
"""


@pytest.mark.parametrize("scale, zero_point", [(0.05, 15), (0.0031, -128), (1.7, 127), (0.25, 0)])
def test_driver_row_conversions_match_the_golden_model(tmp_path, scale, zero_point):
    """model.c's quantize_row_s8 / dequantize_row_s8 (lmb_round_clamped, no roundf call), built natively with the
    firmware's flags, against fixed_point.quantize_f32 / dequantize_f32 bit for bit: ties at
    +-k.5 (away from zero), values just inside and outside the clamp, the int8 limits, zeros."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    source = tmp_path / "rows.c"
    source.write_text("#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n#include \"lumamba_fmath.h\"\n"
                      + "\n".join(_INT8_ROW_FUNCTIONS) + _ROW_MAIN)
    exe = tmp_path / "rows"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off",
                    f"-I{FIRMWARE_ROOT / 'runtime'}", str(source), "-o", str(exe)], check=True)
    s = np.float32(scale)
    inv = inverse_scale(s)
    k = np.arange(-300, 301, dtype=np.float32)
    ties = np.concatenate([k + np.float32(0.5), k - np.float32(0.5)]) * s       # x * inv near k +- 0.5
    near = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    rng = np.random.default_rng(0)
    x = np.concatenate([ties, near, k * s, rng.standard_normal(1000).astype(np.float32) * 200 * s,
                        np.array([0.0, -0.0, 1e30, -1e30, 1e-30], np.float32)]).astype(np.float32)
    bits = lambda v: f"{int(np.array([v], np.float32).view(np.uint32)[0]):08x}"  # noqa: E731
    out = subprocess.run([str(exe), bits(inv), bits(s), str(zero_point)], input=x.tobytes(), capture_output=True,
                         check=True).stdout
    assert x.size <= 8192    # the harness's buffers
    q = np.frombuffer(out[:x.size], np.int8)
    back = np.frombuffer(out[x.size:], np.float32)
    want = quantize_f32(x, inv, zero_point)
    bad = np.flatnonzero(q != want)
    assert not bad.size, f"x={x[bad[0]]!r} (x*inv={x[bad[0]] * inv!r}): C {q[bad[0]]}, golden {want[bad[0]]}"
    assert np.array_equal(back.view(np.uint32), dequantize_f32(want, s, zero_point).view(np.uint32))


def test_schedule_storage_is_the_golden_quantize():
    """run_schedule's int8 store / load (export/onnx/schedule.py, which may not import lumamba.quant)
    equal fixed_point.quantize_f32 / dequantize_f32 bit for bit: ties, clamps, large values."""
    from lumamba.export.onnx.schedule import _load, _store

    rng = np.random.default_rng(1)
    for scale, zero_point in ((0.05, 15), (0.0031, -128), (1.7, 127), (0.25, 0)):
        spec = BufferSpec("h", (1,), "activation", "int8", float(np.float32(scale)), zero_point)
        s = np.float32(scale)
        k = np.arange(-300, 301, dtype=np.float32)
        ties = np.concatenate([k + np.float32(0.5), k - np.float32(0.5)]) * s
        x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                            rng.standard_normal(1000).astype(np.float32) * 200 * s,
                            np.array([0.0, -0.0, 1e30, -1e30, 1e-30], np.float32)]).astype(np.float32)
        q = _store(spec, x)
        assert q.dtype == np.int8 and np.array_equal(q, quantize_f32(x, inverse_scale(s), zero_point))
        assert np.array_equal(_load(spec, q).view(np.uint32), dequantize_f32(q, s, zero_point).view(np.uint32))
