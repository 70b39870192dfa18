"""Route from a scheduled int8 qlinear PrimFunc to the firmware micro-kernels
(export/codegen/micro_kernel_tir.py): the lowered C calls the kernel per tile and is bit-exact with the
golden model's qlinear (zero points at the int8 limits, K and N not multiples of the tile), for every
kernel form (on the host the Arm forms are their portable fallbacks, lumamba_s8_gemm_fallback_c.c)."""
import ctypes
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from lumamba.export.codegen.integer_te import fold_bias
from lumamba.export.codegen.micro_kernel_tir import lower_qlinear_with_micro_kernel
from lumamba.export.project.kernel_harness import KERNELS_DIR
from lumamba.export.codegen.kernel_layout import KERNEL_FUNCTIONS, relayout
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
    words = 4 * (k // 4)
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

    args = [x, relayout(form, w), fold_bias(w, b, x_zp), mult, shift]
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
