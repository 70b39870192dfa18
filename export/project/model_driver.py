"""Generate the firmware's model driver (`model.h`, `model.c`) from a schedule manifest.

The driver runs the manifest's schedule (see `lumamba.export.onnx.manifest`) in C, calling one
compiled graph (`<graph>_run()`, from `lumamba.export.codegen`) per step:

    int lumamba_init(void);                                   aligns the static arena
    int lumamba_infer(const float *window, float *logits);    LUMAMBA_OK or an error code
    int lumamba_infer_counts(const int16_t *counts, float uv_per_count, float *logits);

    int16_t *lumamba_counts_buffer(void);                     where the firmware puts its window

lumamba_infer() takes the model's input, a window already normalised as the model was trained;
lumamba_infer_counts() takes int16 ADC counts and normalises them on the device by the manifest's
`preprocess` method (firmware/runtime/lumamba_normalise.c), then runs the same schedule. When a
stage reads the whole input window, the counts are normalised into the arena's input block, and
lumamba_counts_buffer() is the upper half of that block (the normalisation runs in place there).
When every stage reads the window a patch at a time (manifest patch bindings: the streamed front
end), no float window exists: each patch is normalised from the counts (per-channel statistics
computed first) into a patch block of C x P floats just before the stage that reads it, and
lumamba_counts_buffer() is an int16 block of its own; lumamba_infer() copies the patch from the
caller's float window instead.

Memory is one static arena. Every buffer of the manifest (except the caller's input window and
logits) and every graph's scratch is a block at an offset fixed here, with a lifetime in stages;
the input block of lumamba_infer_counts() lives as long as the input buffer is read;
blocks alive in the same stage never share bytes (`lumamba.export.codegen.arena`, the planner the
compiled graphs' own arenas use too).
A buffer a stage both reads and writes whole (recurrent state) is double-buffered: the step reads
one copy and writes the other, then the two pointers swap, because a graph's inputs and outputs
must not alias. Loops over patches/tokens are plain C `for` loops; nothing is allocated at run
time and nothing recurses.

An int8 buffer (manifest dtype "int8": the stored front end's conv outputs in an int8 export)
takes one byte per element. The graphs' ports stay float32, so a stage binding one gets a float
block of the port's size of its own (`row_<stage>_<port>`, alive in that stage only): the driver
dequantizes the buffer's row into it before the call (input) or quantizes it into the row after
the call (output), with golden.py's arithmetic (`quantize_row_s8`, `dequantize_row_s8` in model.c).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lumamba.quant.buffer_storage import int8_buffers
from lumamba.quant.fixed_point import inverse_scale

from ..codegen.arena import ALIGN, Lifetime, lower_bound, plan_arena
from ..codegen.cgraph import CGraph
from ..codegen.graph_c import c_identifier
from ..codegen.lower import c_type
from ..onnx.manifest import Binding, Manifest, Stage

GENERATOR = "lumamba.export.project.model_driver"
COUNTS_INPUT = "counts_window"   # arena block lumamba_infer_counts() normalises the counts into
COUNTS_INT16 = "counts_int16"    # streamed: arena block of lumamba_counts_buffer(), the int16 window
PATCH_INPUT = "patch_input"      # streamed: arena block patch t of the window is loaded into
# model.h's name of each lumamba.normalise method (lumamba_normalise.h defines their values)
NORMALISATION_DEFINES = {"zscore": "LUMAMBA_NORM_ZSCORE", "robust": "LUMAMBA_NORM_ROBUST",
                         "fixed": "LUMAMBA_NORM_FIXED"}


@dataclass(frozen=True)
class GraphCall:
    """How the driver runs one manifest graph.

    `function` is the compiled graph's C name (`<function>_run`); `cgraph` its ports and arena
    size; `weights` names the const arrays passed as its weight arguments, in `cgraph.weights`
    order (empty when the graph's weights are folded into its own sources).
    """

    function: str
    cgraph: CGraph
    weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """A region of the static arena: a buffer copy or a stage's scratch, alive in stages first..last."""

    name: str     # C identifier of the pointer in lumamba_infer()
    nbytes: int
    first: int
    last: int
    offset: int
    what: str     # for the arena map comment


@dataclass(frozen=True)
class MemoryPlan:
    """The arena layout: blocks (buffer copies and scratch) and the total size in bytes."""

    blocks: tuple[Block, ...]
    total: int
    double_buffered: tuple[str, ...]   # manifest buffers that have two copies
    zero_at_start: tuple[str, ...]     # buffers read before anything writes them (zeros, as ORT's runner)
    # The most bytes alive in one stage, each graph's scratch counted at its own bound: no arena
    # for this schedule and these graphs can be smaller (the memory report compares).
    lower_bound: int = 0

    def block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)


def _buffer_ident(name: str) -> str:
    return "buf_" + c_identifier(name)


def _scratch_ident(index: int) -> str:
    return f"scratch_{index}"


def _nbytes(shape, itemsize: int = 4) -> int:
    return int(np.prod(shape, dtype=np.int64)) * itemsize  # float32 unless an int8 buffer says 1


def _row_ident(index: int, port: str) -> str:
    """The float block of stage `index`'s port bound to an int8 buffer."""
    return f"row_{index}_{c_identifier(port)}"


def _int8_bindings(manifest: Manifest, index: int) -> list[tuple[Binding, bool]]:
    """(binding, is_output) of stage `index`'s ports bound to int8 buffers."""
    stage = manifest.schedule[index]
    return [(b, out) for bindings, out in ((stage.inputs, False), (stage.outputs, True)) for b in bindings
            if not b.patch and manifest.buffer(b.buffer).dtype == "int8"]


def _port_elements(manifest: Manifest, binding: Binding) -> int:
    shape = manifest.buffer(binding.buffer).shape
    return int(np.prod(shape[1:] if binding.row else shape, dtype=np.int64))


def _external(manifest: Manifest) -> set[str]:
    """Buffers the caller owns: the input window and the logits."""
    return {manifest.input_buffer, manifest.logits_buffer}


def _reads_whole_input(manifest: Manifest) -> bool:
    """Whether some stage reads the input window whole (else only patch by patch, or not at all)."""
    return any(b.buffer == manifest.input_buffer and not b.patch for s in manifest.schedule for b in s.inputs)


def _patch_stages(manifest: Manifest) -> list[int]:
    """Indices of the stages that read patch t of the input window."""
    return [i for i, s in enumerate(manifest.schedule) if any(b.patch for b in s.inputs)]


def _ping_pong(stage: Stage) -> set[str]:
    """Buffers the stage reads and writes whole: these need two copies."""
    read = {b.buffer for b in stage.inputs if not b.row and b.rows is None}
    return {b.buffer for b in stage.outputs if not b.row and b.rows is None and b.buffer in read}


def _check_schedule(manifest: Manifest) -> None:
    """Reject schedules the driver cannot run without aliasing a graph's input and output."""
    if manifest.logits_buffer is None:
        raise ValueError("the manifest is encoder-only (no logits buffer): the firmware driver needs a classifier")
    logits = manifest.buffer(manifest.logits_buffer)
    if logits.shape != (1, manifest.n_classes):
        raise ValueError(f"logits buffer {logits.name!r} has shape {logits.shape}, expected (1, {manifest.n_classes})")
    window = manifest.buffer(manifest.input_buffer)
    if window.shape != (1, manifest.n_channels, manifest.n_samples):
        raise ValueError(f"input buffer {window.name!r} has shape {window.shape}, expected "
                         f"(1, {manifest.n_channels}, {manifest.n_samples})")
    for i, stage in enumerate(manifest.schedule):
        where = f"stage {i} ({stage.graph})"
        written = [b.buffer for b in stage.outputs]
        if manifest.input_buffer in written or manifest.input_buffer in stage.zero:
            raise ValueError(f"{where} writes the input buffer {manifest.input_buffer!r}, which is the caller's const window")
        if len(set(written)) != len(written):
            raise ValueError(f"{where} writes buffer(s) {sorted({w for w in written if written.count(w) > 1})} twice")
        pairs = _ping_pong(stage)
        for b in stage.outputs:
            readers = [r for r in stage.inputs if r.buffer == b.buffer]
            if readers and (b.row or b.rows is not None or any(r.row or r.rows is not None for r in readers)):
                raise ValueError(f"{where} reads and writes rows of buffer {b.buffer!r}: input and output "
                                 "would alias; only whole-buffer state can be double-buffered")
            if b.buffer in pairs and b.buffer in _external(manifest):
                raise ValueError(f"{where} reads and writes the caller's buffer {b.buffer!r} as state")


def plan_memory(manifest: Manifest, calls: Mapping[str, GraphCall]) -> MemoryPlan:
    """Place every driver-owned buffer copy and every stage's scratch in one arena (see module doc)."""
    _check_schedule(manifest)
    external = _external(manifest)
    doubled = sorted({name for stage in manifest.schedule for name in _ping_pong(stage)})
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    written: set[str] = set()
    zero_at_start: list[str] = []
    for i, stage in enumerate(manifest.schedule):
        for name in stage.zero:
            written.add(name)
        for b in stage.inputs:
            if b.buffer not in written and b.buffer not in external and b.buffer not in zero_at_start:
                zero_at_start.append(b.buffer)   # read before written: ORT's runner reads zeros
        touched = [*stage.zero, *(b.buffer for b in stage.inputs), *(b.buffer for b in stage.outputs)]
        for name in touched:
            first.setdefault(name, i)
            last[name] = i
        written.update(b.buffer for b in stage.outputs)
    for name in zero_at_start:
        first[name] = 0

    wanted = []  # (ident, nbytes, first, last, what)
    for buf in manifest.buffers:
        if buf.name in external or buf.name not in first:
            continue
        nbytes = _nbytes(buf.shape, buf.itemsize)
        what = f"{buf.name} {buf.kind} {buf.dtype}{list(buf.shape)}"
        wanted.append((_buffer_ident(buf.name), nbytes, first[buf.name], last[buf.name], what))
        if buf.name in doubled:
            wanted.append((_buffer_ident(buf.name) + "_next", nbytes, first[buf.name], last[buf.name],
                           what + ", second copy"))
    window = manifest.buffer(manifest.input_buffer)
    if window.name in first and _reads_whole_input(manifest):
        wanted.append((COUNTS_INPUT, _nbytes(window.shape), first[window.name], last[window.name],
                       f"{window.name} float32{list(window.shape)} normalised from int16 counts (lumamba_infer_counts)"))
    elif window.name in first:
        wanted.append((COUNTS_INT16, _nbytes(window.shape) // 2, first[window.name], last[window.name],
                       f"{window.name} int16{list(window.shape)} counts (lumamba_counts_buffer)"))
    patched = _patch_stages(manifest)
    if patched:
        patch = (manifest.n_channels, manifest.n_samples // manifest.n_patches)
        wanted.append((PATCH_INPUT, _nbytes(patch), patched[0], patched[-1],
                       f"patch t of {window.name}, float32{list(patch)}"))
    for i, stage in enumerate(manifest.schedule):
        call = calls[stage.graph]
        if call.cgraph.arena_bytes:
            wanted.append((_scratch_ident(i), call.cgraph.arena_bytes, i, i, f"scratch of {call.function}_run"))
        for b, _ in _int8_bindings(manifest, i):
            wanted.append((_row_ident(i, b.port), 4 * _port_elements(manifest, b), i, i,
                           f"float32 port {b.port} of {stage.graph}, for int8 {b.buffer}"))

    offsets, total = plan_arena([Lifetime(ident, nbytes, start, end) for ident, nbytes, start, end, _ in wanted])
    blocks = sorted((Block(ident, nbytes, start, end, offsets[ident], what) for ident, nbytes, start, end, what in wanted),
                    key=lambda b: (b.offset, b.first, b.name))
    buffers = [Lifetime(ident, nbytes, start, end) for ident, nbytes, start, end, _ in wanted
               if not ident.startswith("scratch_")]
    bound = lower_bound(buffers, [calls[stage.graph].cgraph.arena_lower_bound for stage in manifest.schedule])
    return MemoryPlan(tuple(blocks), total, tuple(doubled), tuple(zero_at_start), bound)


# --- C text -------------------------------------------------------------------------------------


def _check_call(manifest: Manifest, stage: Stage, call: GraphCall) -> None:
    """The compiled graph's ports must be the manifest graph's, in float32 and of the bound sizes."""
    g, cg = manifest.graph(stage.graph), call.cgraph
    n_data = len(cg.inputs) - len(cg.weights)
    if len(call.weights) != len(cg.weights):
        raise ValueError(f"graph {stage.graph!r}: {len(call.weights)} weight arrays for "
                         f"{len(cg.weights)} weight arguments of {call.function}_run")
    for what, got, want in (("inputs", cg.inputs[:n_data], g.inputs), ("outputs", cg.outputs, g.outputs)):
        if sorted(s.name for s in got) != sorted(s.name for s in want):
            raise ValueError(f"graph {stage.graph!r}: compiled {what} {[s.name for s in got]} differ from the "
                             f"manifest's {[s.name for s in want]}")
        shapes = {s.name: tuple(s.shape) for s in want}
        for spec in got:
            if spec.dtype != "float32" or int(np.prod(spec.shape)) != int(np.prod(shapes[spec.name])):
                raise ValueError(f"graph {stage.graph!r}: port {spec.name!r} is {spec.dtype}{list(spec.shape)} "
                                 f"in C but float32{list(shapes[spec.name])} in the manifest")


class _Writer:
    """C expressions for the buffers bound to a stage's ports."""

    def __init__(self, manifest: Manifest, plan: MemoryPlan):
        self.manifest = manifest
        self.plan = plan

    def pointer(self, binding: Binding, output: bool, stage: Stage, index: int) -> str:
        m = self.manifest
        if binding.patch:
            return PATCH_INPUT
        if m.buffer(binding.buffer).dtype == "int8":
            return _row_ident(index, binding.port)
        if binding.buffer == m.input_buffer:
            base = "input->window"
        elif binding.buffer == m.logits_buffer:
            base = "logits"
        else:
            base = _buffer_ident(binding.buffer)
            if output and binding.buffer in _ping_pong(stage):
                base += "_next"
        row = int(np.prod(m.buffer(binding.buffer).shape[1:], dtype=np.int64))
        if binding.rows is not None:
            return f"{base} + {binding.rows[0] * row}u" if binding.rows[0] else base
        if not binding.row:
            return base
        return f"{base} + t * {row}u"

    def call(self, index: int, stage: Stage, call: GraphCall, indent: str) -> list[str]:
        cg = call.cgraph
        n_data = len(cg.inputs) - len(cg.weights)
        ins = {b.port: b for b in stage.inputs}
        outs = {b.port: b for b in stage.outputs}
        args = [self.pointer(ins[s.name], False, stage, index) for s in cg.inputs[:n_data]]
        args += list(call.weights)
        args += [self.pointer(outs[s.name], True, stage, index) for s in cg.outputs]
        args.append(f"arena + {self.plan.block(_scratch_ident(index)).offset}u" if cg.arena_bytes else "arena")
        inner = indent + "        "
        lines = [f"{indent}if (load_patch(input, t, {PATCH_INPUT}) != LUMAMBA_OK) {{",
                 f"{indent}    return LUMAMBA_ERR_NONFINITE_INPUT;", f"{indent}}}"] \
            if any(b.patch for b in stage.inputs) else []
        converts = _int8_bindings(self.manifest, index)
        lines += [f"{indent}{self._convert(index, b, out)}" for b, out in converts if not out]
        lines += [f"{indent}if ({call.function}_run("]
        lines += [f"{inner}{a}," for a in args[:-1]] + [f"{inner}{args[-1]}) != 0) {{"]
        lines += [f"{indent}    return LUMAMBA_ERR_INTERNAL;", f"{indent}}}"]
        lines += [f"{indent}{self._convert(index, b, out)}" for b, out in converts if out]
        for name in sorted(_ping_pong(stage)):
            ident = _buffer_ident(name)
            lines.append(f"{indent}swap_buffers(&{ident}, &{ident}_next);")
        return lines

    def _convert(self, index: int, binding: Binding, output: bool) -> str:
        """The call that moves an int8 buffer's row to or from the stage's float port block."""
        buf = self.manifest.buffer(binding.buffer)
        n = _port_elements(self.manifest, binding)
        held = _buffer_ident(buf.name) + (f" + t * {n}u" if binding.row else "")
        port = _row_ident(index, binding.port)
        if output:
            inv = inverse_scale(np.float32(buf.scale))
            return f"quantize_row_s8({port}, {held}, {n}u, {_float_literal(inv)}, {buf.zero_point});"
        return f"dequantize_row_s8({held}, {port}, {n}u, {_float_literal(buf.scale)}, {buf.zero_point});"


def _float_literal(value) -> str:
    """A C float literal of the float32 `value` (the shortest decimal of its double reads back
    to the same float32)."""
    return f"{float(np.float32(value))!r}f"


_INT8_ROW_FUNCTIONS = [
    "/* int8 buffers (golden.py's quantize / dequantize): q = clamp(roundf(x * inv_scale)) + zp, clamped on",
    " * the float value; x = (float)(q - zp) * scale. Clamping before rounding is the same as after (the",
    " * bounds are integers), and then lmb_round_clamped (lumamba_fmath.h) rounds as roundf. */",
    "static void quantize_row_s8(const float *x, int8_t *q, size_t n, float inv_scale, int32_t zero_point)",
    "{",
    "    const float lo = (float)(-128 - zero_point);",
    "    const float hi = (float)(127 - zero_point);",
    "    size_t i;",
    "    for (i = 0u; i < n; ++i) {",
    "        float v = x[i] * inv_scale;",
    "        v = v < lo ? lo : v;",
    "        v = v > hi ? hi : v;",
    "        q[i] = (int8_t)(lmb_round_clamped(v) + zero_point);",
    "    }",
    "}",
    "",
    "static void dequantize_row_s8(const int8_t *q, float *x, size_t n, float scale, int32_t zero_point)",
    "{",
    "    size_t i;",
    "    for (i = 0u; i < n; ++i) {",
    "        x[i] = (float)((int32_t)q[i] - zero_point) * scale;",
    "    }",
    "}",
    "",
]


def _stage_lines(index: int, stage: Stage, call: GraphCall, writer: _Writer, manifest: Manifest) -> list[str]:
    a, b = stage.span if stage.span is not None else (0, None)
    last = "S-1" if b is None else str(b - 1)
    loops = {"once": "once", "forward": f"for t = {a} .. {last}", "reverse": f"for t = {last} .. {a}"}
    lines = [f"    /* stage {index}: {stage.graph} ({call.function}_run), {loops[stage.loop]} */"]
    for name in stage.zero:
        buf = manifest.buffer(name)
        lines.append(f"    memset({_buffer_ident(name)}, 0, {_nbytes(buf.shape, buf.itemsize)}u);")
    if stage.loop == "once":
        return lines + writer.call(index, stage, call, "    ")
    count = "LUMAMBA_N_PATCHES" if b is None else f"{b - a}u"
    end = "LUMAMBA_N_PATCHES" if b is None else f"{b}u"
    lines.append(f"    for (step = 0u; step < {count}; ++step) {{")
    start = f"{a}u + step" if a else "step"
    lines.append(f"        t = {start};" if stage.loop == "forward" else f"        t = {end} - 1u - step;")
    lines += writer.call(index, stage, call, "        ")
    return lines + ["    }"]


def _size_checks(manifest: Manifest, plan: MemoryPlan, calls: Mapping[str, GraphCall]) -> list[str]:
    """Compile-time checks that model.c and each graph's header agree on sizes (C99 has no
    static_assert: a negative array size stops the build)."""
    lines = []
    done = set()
    for i, stage in enumerate(manifest.schedule):
        call = calls[stage.graph]
        macro = call.function.upper()
        cg = call.cgraph
        if call.function not in done:
            done.add(call.function)
            ports = [(f"IN{k}", s) for k, s in enumerate(cg.inputs)] + [(f"OUT{k}", s) for k, s in enumerate(cg.outputs)]
            for tag, spec in ports:
                lines.append(f"typedef char lumamba_check_{call.function}_{tag.lower()}"
                             f"[({macro}_{tag}_SIZE == {int(np.prod(spec.shape))}) ? 1 : -1];")
        if cg.arena_bytes:
            size = plan.block(_scratch_ident(i)).nbytes
            lines.append(f"typedef char lumamba_check_scratch_{i}[({macro}_ARENA_BYTES <= {size}u) ? 1 : -1];")
    return lines


def weight_declarations(calls: Mapping[str, GraphCall]) -> list[str]:
    """`extern const` declarations of every weight array passed to a shared graph, sorted by name."""
    decls = {}
    for call in calls.values():
        for name, spec in zip(call.weights, call.cgraph.weights):
            decls[name] = f"extern const {c_type(spec.dtype)} {name}[{max(int(np.prod(spec.shape)), 1)}];"
    return [decls[k] for k in sorted(decls)]


def generate_driver(manifest: Manifest, calls: Mapping[str, GraphCall]) -> dict[str, str]:
    """`model.h`, `model.c` and, when weights are passed as arguments, `model_weights.h`
    (file name -> text) for `manifest`, whose graphs are compiled as `calls[graph name]`."""
    missing = [g.name for g in manifest.graphs if g.name not in calls]
    if missing:
        raise ValueError(f"no compiled C for graph(s) {missing}")
    for stage in manifest.schedule:
        _check_call(manifest, stage, calls[stage.graph])
    plan = plan_memory(manifest, calls)
    sources = {"model.h": _model_h(manifest, plan), "model.c": _model_c(manifest, plan, calls)}
    decls = weight_declarations(calls)
    if decls:
        sources["model_weights.h"] = "\n".join([
            f"/* Weights passed to the shared graphs' run functions (defined in weights_*.c). Generated by "
            f"{GENERATOR}; do not edit. */",
            "#ifndef LUMAMBA_MODEL_WEIGHTS_H", "#define LUMAMBA_MODEL_WEIGHTS_H", "", "#include <stdint.h>", "",
            *decls, "", "#endif", ""])
    return sources


def model_h_defines(model_h: Path) -> dict[str, int]:
    """The numeric `#define LUMAMBA_<NAME> <n>` of a generated model.h, by NAME (N_CHANNELS,
    ARENA_BYTES, ARENA_LOWER_BOUND_BYTES, ...)."""
    text = Path(model_h).read_text(encoding="utf-8")
    return {k: int(v) for k, v in re.findall(r"#define LUMAMBA_(\w+) (\d+)u?\b", text)}


def _model_h(manifest: Manifest, plan: MemoryPlan) -> str:
    channels = [f" *   {i:2d} {name}" for i, name in enumerate(manifest.channel_names)]
    if _reads_whole_input(manifest):
        counts_buffer = ["/* Room for one int16 window (LUMAMBA_COUNTS_BUFFER_BYTES) inside the arena, the upper half of",
                         " * the float input block lumamba_infer_counts() normalises into (in place, so the window",
                         " * costs no RAM of its own)."]
    else:
        counts_buffer = ["/* Room for one int16 window (LUMAMBA_COUNTS_BUFFER_BYTES) in a block of the arena, which",
                         " * lumamba_infer_counts() normalises patch by patch (no float window is ever held)."]
    return "\n".join([
        f"/* LuMamba model interface. Generated by {GENERATOR}; do not edit. */",
        "#ifndef LUMAMBA_MODEL_H",
        "#define LUMAMBA_MODEL_H",
        "",
        "#include <stdint.h>",
        "",
        '#include "lumamba_normalise.h"',
        '#include "lumamba_runtime.h"',
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        "/* One window: LUMAMBA_N_CHANNELS rows of LUMAMBA_N_SAMPLES float32 samples, row-major,",
        " * channels in this order:",
        *channels,
        " */",
        f"#define LUMAMBA_N_CHANNELS {manifest.n_channels}",
        f"#define LUMAMBA_N_SAMPLES {manifest.n_samples}",
        f"#define LUMAMBA_N_PATCHES {manifest.n_patches}",
        f"#define LUMAMBA_N_CLASSES {manifest.n_classes}",
        "",
        "/* How the model's input windows were normalised in training (manifest.json \"preprocess\"):",
        f" * {_preprocess_text(manifest)}; lumamba_infer_counts() applies it on the device. */",
        f"#define LUMAMBA_NORMALISATION {NORMALISATION_DEFINES[manifest.preprocess['normalisation']]}",
        "",
        "/* Static RAM the model reserves for activations, recurrent state and scratch (the input",
        " * block of lumamba_infer_counts() included). */",
        f"#define LUMAMBA_ARENA_BYTES {plan.total}u",
        "/* The most bytes this schedule has alive at once: no arena can be smaller. */",
        f"#define LUMAMBA_ARENA_LOWER_BOUND_BYTES {plan.lower_bound}u",
        "",
        "/* Prepares the static arena; call once before lumamba_infer(). Returns LUMAMBA_OK. */",
        "int lumamba_init(void);",
        "",
        "/* Computes LUMAMBA_N_CLASSES logits of one window. Returns LUMAMBA_OK, or",
        " * LUMAMBA_ERR_NOT_INITIALISED, LUMAMBA_ERR_NULL_POINTER, LUMAMBA_ERR_NONFINITE_INPUT",
        " * (a NaN or infinity in the window; logits untouched), LUMAMBA_ERR_NONFINITE_OUTPUT (the",
        " * window is finite but so extreme that a logit overflowed; logits undefined) or",
        " * LUMAMBA_ERR_INTERNAL. Never LUMAMBA_OK with a non-finite logit. */",
        "int lumamba_infer(const float *window, float *logits);",
        "",
        "/* The same on a window of int16 ADC counts the firmware owns: LUMAMBA_N_CHANNELS rows of",
        " * LUMAMBA_N_SAMPLES counts, channel order as above; a count is uv_per_count microvolts",
        " * (the board profile's adc.uv_per_count, LUMAMBA_ADC_UV_PER_COUNT in a board build).",
        " * Normalises it by LUMAMBA_NORMALISATION into the arena, then runs the model. Returns as",
        " * lumamba_infer(), or LUMAMBA_ERR_BAD_ARGUMENT when uv_per_count is not a positive finite",
        " * number. */",
        "int lumamba_infer_counts(const int16_t *counts, float uv_per_count, float *logits);",
        "",
        *counts_buffer,
        " * Fill it, then call lumamba_infer_counts(lumamba_counts_buffer(), ...); an inference overwrites",
        " * it. NULL before lumamba_init(). */",
        "#define LUMAMBA_COUNTS_BUFFER_BYTES (2u * LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES)",
        "int16_t *lumamba_counts_buffer(void);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        "#endif /* LUMAMBA_MODEL_H */",
        "",
    ])


def _model_c(manifest: Manifest, plan: MemoryPlan, calls: Mapping[str, GraphCall]) -> str:
    writer = _Writer(manifest, plan)
    functions = sorted({calls[s.graph].function for s in manifest.schedule})
    has_loop = any(s.loop != "once" for s in manifest.schedule)
    arena_map = [f" *   [{b.offset:>9}, {b.offset + b.nbytes:>9})  stages {b.first}-{b.last}  {b.name}: {b.what}"
                 for b in plan.blocks]
    lines = [
        f"/* LuMamba driver: runs the schedule of manifest.json over the compiled graphs.",
        f" * Generated by {GENERATOR}; do not edit. */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#include <string.h>",
        "",
        *(['#include "lumamba_fmath.h"'] if int8_buffers(manifest) else []),
        '#include "lumamba_runtime.h"',
        '#include "model.h"',
        *(['#include "model_weights.h"'] if weight_declarations(calls) else []),
        *[f'#include "{f}.h"' for f in functions],
        "",
        *_size_checks(manifest, plan, calls),
        "",
        f"#define LUMAMBA_ARENA_ALIGN {ALIGN}u",
        "",
        "/* Arena map (byte ranges; blocks alive in a common stage never overlap):",
        *arena_map,
        " * The caller's window and logits are used in place.",
        " */",
        "static float lumamba_storage[(LUMAMBA_ARENA_BYTES + LUMAMBA_ARENA_ALIGN) / sizeof(float)];",
        "static uint8_t *lumamba_arena; /* LUMAMBA_ARENA_ALIGN-aligned start in lumamba_storage; NULL before init */",
        "",
    ]
    if plan.double_buffered:
        lines += [
            "/* Recurrent state is double-buffered: a step reads one copy and writes the other. */",
            "static void swap_buffers(float **current, float **next)",
            "{",
            "    float *tmp = *current;",
            "    *current = *next;",
            "    *next = tmp;",
            "}",
            "",
        ]
    if int8_buffers(manifest):
        lines += _INT8_ROW_FUNCTIONS
    lines += _input_lines(manifest)
    lines += [
        "int lumamba_init(void)",
        "{",
        "    /* float storage is only 4-byte aligned in C99: start the arena at the next boundary. */",
        "    uintptr_t misalignment = (uintptr_t)lumamba_storage % LUMAMBA_ARENA_ALIGN;",
        "    lumamba_arena = (uint8_t *)lumamba_storage +",
        "                    (misalignment == 0u ? 0u : LUMAMBA_ARENA_ALIGN - misalignment);",
        "    return LUMAMBA_OK;",
        "}",
        "",
        "/* The schedule on a finite input (the entry points check their arguments). */",
        "static int run_model(const model_input_t *input, float *logits)",
        "{",
        "    uint8_t *const arena = lumamba_arena;",
    ]
    int8 = {_buffer_ident(b.name) for b in manifest.buffers if b.dtype == "int8"}
    for b in plan.blocks:
        if not b.name.startswith("scratch_") and b.name not in (COUNTS_INPUT, COUNTS_INT16):
            ctype = "int8_t" if b.name in int8 else "float"
            lines.append(f"    {ctype} *{b.name} = ({ctype} *)(arena + {b.offset}u);")
    if has_loop:
        lines += ["    size_t step;", "    size_t t;"]
    lines += [""]
    for name in plan.zero_at_start:
        buf = manifest.buffer(name)
        lines.append(f"    memset({_buffer_ident(name)}, 0, {_nbytes(buf.shape, buf.itemsize)}u);"
                     "  /* read before written */")
    for i, stage in enumerate(manifest.schedule):
        lines.append("")
        lines += _stage_lines(i, stage, calls[stage.graph], writer, manifest)
    lines += [
        "",
        "    /* A finite but extreme window (e.g. one sample of 1e18) can overflow inside the model. */",
        "    if (lumamba_check_finite(logits, LUMAMBA_N_CLASSES) != LUMAMBA_OK) {",
        "        return LUMAMBA_ERR_NONFINITE_OUTPUT;",
        "    }",
        "    return LUMAMBA_OK;",
        "}",
        "",
        *_entry_points(manifest, plan),
    ]
    return "\n".join(lines)


def _input_lines(manifest: Manifest) -> list[str]:
    """model_input_t and, for a schedule that reads the window patch by patch, load_patch()."""
    lines = [
        "/* The model's input: the caller's float window, or (streamed, window NULL) int16 counts that",
        " * load_patch() normalises patch by patch with per-channel statistics norm. */",
        "typedef struct {",
        "    const float *window;",
        "    const int16_t *counts;",
        "    float uv_per_count;",
        "    const lumamba_norm_row_t *norm;",
        "} model_input_t;",
        "",
    ]
    if not _patch_stages(manifest):
        return lines
    return lines + [
        "#define LUMAMBA_PATCH_SIZE (LUMAMBA_N_SAMPLES / LUMAMBA_N_PATCHES)",
        "",
        "/* Patch t of the window (LUMAMBA_N_CHANNELS rows of LUMAMBA_PATCH_SIZE samples at column",
        " * t * LUMAMBA_PATCH_SIZE) into patch, contiguous. LUMAMBA_ERR_NONFINITE_INPUT when a normalised",
        " * sample overflowed (a huge uv_per_count); the float entry checked its window already. */",
        "static int load_patch(const model_input_t *input, size_t t, float *patch)",
        "{",
        "    size_t ch;",
        "    for (ch = 0u; ch < LUMAMBA_N_CHANNELS; ++ch) {",
        "        size_t at = ch * LUMAMBA_N_SAMPLES + t * LUMAMBA_PATCH_SIZE;",
        "        if (input->window != NULL) {",
        "            memcpy(patch + ch * LUMAMBA_PATCH_SIZE, input->window + at, LUMAMBA_PATCH_SIZE * sizeof(float));",
        "        } else {",
        "            lumamba_normalise_apply_s16(input->counts + at, 1u, LUMAMBA_PATCH_SIZE, input->uv_per_count,",
        "                                        &input->norm[ch], patch + ch * LUMAMBA_PATCH_SIZE);",
        "        }",
        "    }",
        "    return input->window != NULL ? LUMAMBA_OK",
        "                                 : lumamba_check_finite(patch, (size_t)LUMAMBA_N_CHANNELS * LUMAMBA_PATCH_SIZE);",
        "}",
        "",
    ]


def _preprocess_text(manifest: Manifest) -> str:
    """The normalisation in words, for model.h."""
    return {"zscore": "per channel (x - mean) / (unbiased std + 1e-8)",
            "robust": "per channel (x - median) / (IQR / 1.349 + 1e-8)",
            "fixed": "x / 50 microvolts"}[manifest.preprocess["normalisation"]]


def _entry_points(manifest: Manifest, plan: MemoryPlan) -> list[str]:
    """lumamba_infer() and lumamba_infer_counts(): argument checks, then run_model()."""
    streamed = not _reads_whole_input(manifest)
    lines = [
        "int lumamba_infer(const float *window, float *logits)",
        "{",
        "    model_input_t input;",
        "    int status;",
        "    if (lumamba_arena == NULL) {",
        "        return LUMAMBA_ERR_NOT_INITIALISED;",
        "    }",
        "    if (logits == NULL) {",
        "        return LUMAMBA_ERR_NULL_POINTER;",
        "    }",
        "    status = lumamba_check_finite(window, (size_t)LUMAMBA_N_CHANNELS * LUMAMBA_N_SAMPLES);",
        "    if (status != LUMAMBA_OK) {",
        "        return status;",
        "    }",
        "    input.window = window;",
        "    input.counts = NULL;",
        "    input.uv_per_count = 0.0f;",
        "    input.norm = NULL;",
        "    return run_model(&input, logits);",
        "}",
        "",
        "int lumamba_infer_counts(const int16_t *counts, float uv_per_count, float *logits)",
        "{",
    ]
    checks = [
        "    if (lumamba_arena == NULL) {",
        "        return LUMAMBA_ERR_NOT_INITIALISED;",
        "    }",
        "    if (counts == NULL || logits == NULL) {",
        "        return LUMAMBA_ERR_NULL_POINTER;",
        "    }",
    ]
    if streamed:
        counts_offset = plan.block(COUNTS_INT16).offset
        lines += [
            "    /* per-channel statistics first; each patch is normalised when a stage reads it */",
            "    lumamba_norm_row_t norm[LUMAMBA_N_CHANNELS];",
            "    model_input_t input;",
            "    size_t ch;",
            *checks,
            "    for (ch = 0u; ch < LUMAMBA_N_CHANNELS; ++ch) {",
            "        int status = lumamba_normalise_stats_s16(counts + ch * LUMAMBA_N_SAMPLES, 1u, LUMAMBA_N_SAMPLES,",
            "                                                 uv_per_count, LUMAMBA_NORMALISATION, &norm[ch]);",
            "        if (status != LUMAMBA_OK) {",
            "            return status;",
            "        }",
            "    }",
            "    input.window = NULL;",
            "    input.counts = counts;",
            "    input.uv_per_count = uv_per_count;",
            "    input.norm = norm;",
            "    return run_model(&input, logits);",
            "}",
        ]
        buffer = f"(int16_t *)(lumamba_arena + {counts_offset}u)"
    else:
        counts_offset = plan.block(COUNTS_INPUT).offset
        lines += [
            "    float *window;",
            "    int status;",
            *checks,
            f"    window = (float *)(lumamba_arena + {counts_offset}u);  /* {COUNTS_INPUT} */",
            "    status = lumamba_normalise_window_s16(counts, LUMAMBA_N_CHANNELS, LUMAMBA_N_SAMPLES, uv_per_count,",
            "                                          LUMAMBA_NORMALISATION, window);",
            "    if (status != LUMAMBA_OK) {",
            "        return status;",
            "    }",
            "    /* the float entry's checks too: a huge uv_per_count could overflow a sample */",
            "    return lumamba_infer(window, logits);",
            "}",
        ]
        buffer = f"(int16_t *)(lumamba_arena + {counts_offset}u + LUMAMBA_COUNTS_BUFFER_BYTES)"
    return lines + [
        "",
        "int16_t *lumamba_counts_buffer(void)",
        "{",
        "    if (lumamba_arena == NULL) {",
        "        return NULL;",
        "    }",
        f"    return {buffer};",
        "}",
        "",
    ]
