"""Route from a scheduled int8 qlinear PrimFunc to the firmware micro-kernels
(export/codegen/micro_kernel_tir.py): the lowered C calls the kernel per tile and is bit-exact with the
golden model's qlinear (zero points at the int8 limits, K and N not multiples of the tile), for every
kernel form (on the host the Arm forms are their portable fallbacks, lumamba_s8_gemm_fallback_c.c)."""
import ctypes
import re
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from tvm import relax

from lumamba.export.codegen.host_graph import build_graph_library
from lumamba.export.codegen.integer_te import dequantize, fold_bias
from lumamba.export.codegen.qgraph_frontend import _emit_integer, compile_qgraph, compile_qnode, fuse_passes
from lumamba.export.codegen.relax_to_c import compile_relax_to_c
from lumamba.export.codegen.micro_kernel_tir import lower_qlinear_with_micro_kernel
from lumamba.export.project.kernel_harness import KERNELS_DIR
from lumamba.export.codegen.kernel_layout import KERNEL_FUNCTIONS, relayout, smlad_scratch_words
from lumamba.quant.ops import OPS


def _build(tmp_path, kernel) -> ctypes.CDLL:
    src = tmp_path / "qlinear.c"
    src.write_text('#include <stdint.h>\n#include "lumamba_kernels.h"\n\n' + kernel.source)
    lib = tmp_path / "libq.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", f"-I{KERNELS_DIR}",
                    str(src), *map(str, sorted(KERNELS_DIR.glob("*.c"))), "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


@pytest.mark.parametrize("form", sorted(KERNEL_FUNCTIONS))
@pytest.mark.parametrize("m,n,k,tile,x_zp,y_zp", [(6, 7, 19, 2, -128, 127), (8, 12, 33, None, 127, -128),
                                                  (1, 5, 40, 1, 0, 3), ((2, 3), 9, 24, None, 5, -7)])
def test_lowered_qlinear_calls_micro_kernel_bit_exact(tmp_path, form, m, n, k, tile, x_zp, y_zp):
    kernel = lower_qlinear_with_micro_kernel(m, n, k, x_zp, y_zp, "qlinear_mk", tile_tokens=tile, form=form)
    calls = kernel.source.count(KERNEL_FUNCTIONS[form] + "(")
    assert calls == 1 and "int64_t" not in kernel.source  # the requantisation is in the kernel now
    # the SMLAD form's scratch: from the arena when large, else a local array of the kernel
    words = smlad_scratch_words(k)
    assert [p.elems for p in kernel.scratch] == ([words] if form == "smlad_2x2" and 4 * words > 64 else [])
    m = int(np.prod(m))
    rng = np.random.default_rng(m * 100 + k)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    b = rng.integers(-30000, 30000, n).astype(np.int32)
    mult = rng.integers(1 << 30, (1 << 31) - 1, n, dtype=np.int64).astype(np.int32)
    shift = rng.integers(-13, 2, n).astype(np.int32)
    node = SimpleNamespace(name="q", attrs={"x_zero_point": x_zp, "y_zero_point": y_zp})
    want = OPS["qlinear"](node, x, params={"weight": w, "bias": b, "multiplier": mult, "shift": shift})[0]

    args = [x, relayout(form, w), np.stack([fold_bias(w, b, x_zp), mult, shift])]
    y = np.zeros((m, n), np.int8)
    fn = _build(tmp_path, kernel).qlinear_mk
    fn.restype = None
    scratch = [np.zeros(p.elems, np.int32) for p in kernel.scratch]
    fn(*(a.ctypes.data_as(ctypes.c_void_p) for a in [*args, y, *scratch]))
    np.testing.assert_array_equal(y, want)


def test_bad_tile_is_rejected():
    with pytest.raises(ValueError, match="tile_tokens=4 must be >= 1 and divide the token count 6"):
        lower_qlinear_with_micro_kernel(6, 7, 19, 0, 0, "q", tile_tokens=4)
    with pytest.raises(ValueError, match="micro-kernel form 'neon' is unknown"):
        lower_qlinear_with_micro_kernel(6, 7, 19, 0, 0, "q", form="neon")
    with pytest.raises(ValueError, match="tiles of a 3-D input must hold all 6 tokens"):
        lower_qlinear_with_micro_kernel((2, 3), 7, 19, 0, 0, "q", tile_tokens=3)


# --- in the generated graph: qgraph_frontend -> relax_to_c ----------------------------------------

def _qlinear_params(rng, n: int, k: int) -> dict:
    return dict(weight=rng.integers(-127, 128, (n, k)).astype(np.int8),
                bias=rng.integers(-3000, 3000, n).astype(np.int32),
                multiplier=rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32),
                shift=rng.integers(-12, 2, n).astype(np.int32))


def _host(graph, tmp_path):
    sources = [str(p) for p in sorted(KERNELS_DIR.glob("*.c"))]
    return build_graph_library(graph, tmp_path, extra_flags=["-I", str(KERNELS_DIR), *sources])


@pytest.mark.parametrize("form", sorted(KERNEL_FUNCTIONS))
def test_qnode_calls_the_form_bit_exact(tmp_path, form):
    """compile_qnode with gemm_form: one kernel calling the form (weights re-laid out, bias,
    multiplier and shift as one (3, N) table), bit-exact with the golden qlinear."""
    rng = np.random.default_rng(5)
    params = _qlinear_params(rng, 24, 37)
    attrs = {"x_zero_point": -7, "y_zero_point": 11}
    x = rng.integers(-128, 128, (6, 5, 37)).astype(np.int8)
    graph = compile_qnode("qlinear", attrs, params, x.shape, "qk", gemm_form=form)
    assert graph.kernels_c.count(KERNEL_FUNCTIONS[form] + "(") == 1 and "int64_t acc" not in graph.kernels_c
    assert f"const int8_t qk_c0[{24 * 37}]" in graph.weights_c and f"const int32_t qk_c1[{3 * 24}]" in graph.weights_c
    node = SimpleNamespace(name="q", attrs=attrs)
    want = OPS["qlinear"](node, x, params=params)[0]
    np.testing.assert_array_equal(_host(graph, tmp_path)(x)[0], want)


def test_consumers_fuse_into_the_token_tiles(tmp_path):
    """qlinear -> dequantize over 704 tokens: one kernel calls the SMLAD form per tile of 16 tokens
    and dequantises each tile, so the int8 output lives in a 16 x N tile of the arena; float output
    bit for bit that of TVM's scalar loop nest."""
    rng = np.random.default_rng(6)
    m, n, k = 704, 21, 42
    params = _qlinear_params(rng, n, k)
    attrs = {"x_zero_point": 3, "y_zero_point": -5}

    def compile_graph(form):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType([1, m, k], "int8"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = _emit_integer(bb, "qlinear", attrs, x, params, form)
                out = bb.emit_output(bb.emit_te(dequantize, y, 0.5, -5, primfunc_name_hint="dequantize"))
            bb.emit_func_output(out)
        return compile_relax_to_c(bb.get(), "g", ["x"], ["y"], fuse_passes(), headers=["lumamba_kernels.h"])

    scalar, tiled = compile_graph(None), compile_graph("smlad_2x2")
    assert len(tiled.kernel_symbols) == 1 and tiled.kernels_c.count("lumamba_s8_gemm_2x2_smlad(") == 1
    assert re.search(r"for \(int32_t \w+ = 0; \w+ < 44; \+\+\w+\) \{\n    lumamba_s8_gemm_2x2_smlad\(.*, 16, 21, 42,",
                     tiled.kernels_c)
    assert tiled.arena_bytes <= 16 * n + 4 * smlad_scratch_words(k) + 2 * 16   # the int8 tile and the SMLAD scratch
    x = rng.integers(-128, 128, (1, m, k)).astype(np.int8)
    want = _host(scalar, tmp_path / "scalar")(x)[0]
    got = _host(tiled, tmp_path / "tiled")(x)[0]
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_unknown_gemm_form_is_rejected():
    with pytest.raises(ValueError, match="gemm_form 'neon': known forms are c_4x4, smlad_2x2, mve_4x2"):
        compile_qgraph(SimpleNamespace(), "g", gemm_form="neon")
