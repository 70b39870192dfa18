"""Stage 3 of the export, the firmware project: compiled graphs -> a buildable, runnable project.

Contract: in, an export's manifest and its `CGraph`s (float: `firmware_project.compile_model`;
int8: `int8_project.compile_int8_model`); out, a self-contained project directory (generated C,
a copy of lumamba/firmware, a Makefile) that `make BOARD=...` builds without Python, plus the tools
around it: board profiles (`boards`), the build (`build`), QEMU or native runs (`qemu`), the
memory report (`memory_report`), the test application's windows (`test_vectors`) and the host
build loaded through ctypes (`host_c_runner`).

`model_driver` writes `model.c`/`model.h`: the manifest's schedule in C over one static arena
(planned by `lumamba.export.codegen.arena`).
"""
