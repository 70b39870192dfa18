"""The schedule manifest: which ONNX graphs compute LuMamba in recurrent mode, and in what order.

`manifest.json` (in the export directory) is declarative: named buffers, graphs with their
input/output names and shapes, and an ordered list of stages. Every executor (the onnxruntime
runner, the generated C driver) runs the same loop:

    for stage in schedule:
        zero the buffers in stage.zero                      # the stage's recurrent state
        for t in (once | 0..S-1 | S-1..0, by stage.loop):
            bind each input port to its buffer (or to row t of it, when binding.row)
            run stage.graph; store each output port in its buffer (or row t)

A row binding reads or writes `buffer[t]` (axis 0); the port's shape is (1, *buffer.shape[1:]).
A rows binding reads or writes the rows [a, b) of a buffer (`Binding.rows`), in any loop; the
port's shape is (b - a, *buffer.shape[1:]). A stage with a `span` (a, b) loops over t = a..b-1
(forward) or b-1..a (reverse) instead of all S tokens: with rows bindings, this runs a Mamba chunk
by chunk (the "chunk" Mamba form, `mamba_chunk`).
A patch binding (inputs only) reads patch t of the input window (1, C, T): the C rows x P samples
at column t*P, P = T / S; the port's shape is (1, C, P). It lets a per-patch graph stream the
window, so that an executor never needs the whole float window at once (the firmware normalises
each patch from the int16 counts it owns).
A state buffer is both read and written by its stage: executors that cannot alias inputs and
outputs must double-buffer it.

Buffer storage: every buffer holds float32 unless its `dtype` is "int8" (an int8 export's
activation buffer, set by the quantiser, see `quant/buffer_storage.py`). An int8 buffer stores
quantize(x) with its own `scale` and `zero_point` (golden.py's quantize: v = x * float32(1/scale),
rounded half away from zero, clamped, + zero_point) and is read as (float)(q - zero_point) * scale;
ports stay float32, so a graph never sees the difference.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lumamba.normalise import check_spec, spec as normalisation_spec

FORMAT = "lumamba-recurrent-onnx"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOOPS = ("once", "forward", "reverse")
BUFFER_KINDS = ("input", "activation", "state", "output")
BUFFER_DTYPES = ("float32", "int8")
# How each Mamba is cut into graphs (exporter `mamba_form`): "window" = <name>_pre over all tokens,
# <name>_scan per token, <name>_post over all tokens; "step" = one graph per token with its state;
# "chunk" = the window form's stages per chunk of `mamba_chunk` tokens (`mamba_chunk.py`).
MAMBA_FORMS = ("window", "step", "chunk")


# Names in a manifest: plain identifiers-with-punctuation, no spaces, quotes, slashes or '*'.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")   # 10-05 names, bipolar "FP1-F7"
MAX_DIM = 1 << 24           # no axis or count in a LuMamba export comes near this
MAX_ELEMENTS = 1 << 26      # 256 MB of float32 in one buffer: far above any model here


def _check_name(what: str, value, pattern: re.Pattern = NAME) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain name (allowed: {pattern.pattern})")


def _check_shape(what: str, shape) -> None:
    if not all(type(d) is int and 0 < d <= MAX_DIM for d in shape):
        raise ValueError(f"{what}: shape {shape!r} must hold positive integers <= {MAX_DIM}")
    n = 1
    for d in shape:
        n *= d
    if n > MAX_ELEMENTS:
        raise ValueError(f"{what}: shape {shape!r} has {n:,} elements, more than {MAX_ELEMENTS:,}")


def _pair(value):
    """A JSON [a, b] as a tuple (None stays None; anything else is left to validate to reject)."""
    return tuple(value) if isinstance(value, list) else value


def check_mamba_form(mamba_form) -> str:
    """`mamba_form` if it is one of MAMBA_FORMS, else a ValueError naming the choices."""
    if mamba_form not in MAMBA_FORMS:
        raise ValueError(f"mamba_form must be one of {', '.join(map(repr, MAMBA_FORMS))}, got {mamba_form!r}")
    return mamba_form


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output (float32)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX file. Graphs with equal `structure` differ only in initializer values."""

    name: str
    file: str
    kind: str                  # frontend | unify | frontend_stats<k> | frontend_combine | frontend_patch |
                               # frontend_conv<k> | frontend_stored (front_end="stored") |
                               # encoder_step | head_step | head_out, and in the window Mamba form
                               # encoder_pre_fwd | encoder_pre_rev | encoder_scan | encoder_post |
                               # head_pre | head_scan | head_post; in the chunk form encoder_chunk_pre_fwd |
                               # encoder_chunk_pre_rev | head_chunk_pre | head_chunk_post (+ the scans,
                               # encoder_post and head_out)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sources: tuple[str, ...]   # state-dict prefixes of the modules its weights come from
    structure: str             # fingerprint of the graph without initializer values
    n_params: int              # float weights (initializer elements)


@dataclass(frozen=True)
class BufferSpec:
    """An array the executor owns; `kind` is input, activation, state or output. float32, or int8
    with `scale` and `zero_point` (module doc: stored quantised, read dequantised)."""

    name: str
    shape: tuple[int, ...]
    kind: str
    dtype: str = "float32"
    scale: float = 0.0
    zero_point: int = 0

    @property
    def itemsize(self) -> int:
        return 1 if self.dtype == "int8" else 4

    def check(self) -> None:
        """The storage fields: float32, or int8 of an activation with a positive finite scale and an
        int8 zero point."""
        if self.dtype not in BUFFER_DTYPES:
            raise ValueError(f"buffer {self.name!r}: dtype {self.dtype!r} is not one of {BUFFER_DTYPES}")
        if self.dtype == "float32":
            if self.scale != 0.0 or self.zero_point != 0:
                raise ValueError(f"buffer {self.name!r}: float32 buffer with a scale or zero point")
            return
        if self.kind != "activation":
            raise ValueError(f"buffer {self.name!r}: only activation buffers can be int8, not {self.kind}")
        if not isinstance(self.scale, float) or not math.isfinite(self.scale) or self.scale <= 0.0:
            raise ValueError(f"buffer {self.name!r}: int8 scale must be a positive finite float, got {self.scale!r}")
        if type(self.zero_point) is not int or not -128 <= self.zero_point <= 127:
            raise ValueError(f"buffer {self.name!r}: int8 zero_point must be an integer in [-128, 127], "
                             f"got {self.zero_point!r}")


@dataclass(frozen=True)
class Binding:
    """Graph port <-> buffer; `row` selects row t of the buffer inside a loop, `patch` patch t of the
    input window (C rows x P samples at column t*P), `rows` the fixed rows [a, b) of the buffer."""

    port: str
    buffer: str
    row: bool = False
    patch: bool = False
    rows: tuple[int, int] | None = None


@dataclass(frozen=True)
class Stage:
    """Run `graph` once, or for t = 0..S-1 (forward), or t = S-1..0 (reverse); with a `span`
    (a, b), t = a..b-1 or b-1..a."""

    graph: str
    loop: str
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    zero: tuple[str, ...] = ()
    span: tuple[int, int] | None = None

    def steps(self, n_patches: int) -> range | list[None]:
        """The values of t, in order ([None] for a stage run once)."""
        if self.loop == "once":
            return [None]
        a, b = self.span if self.span is not None else (0, n_patches)
        return range(a, b) if self.loop == "forward" else range(b - 1, a - 1, -1)


@dataclass
class Manifest:
    """Everything an executor needs besides the ONNX files themselves."""

    config: dict
    n_classes: int
    channel_names: tuple[str, ...]
    n_samples: int
    n_patches: int
    graphs: tuple[GraphSpec, ...]
    buffers: tuple[BufferSpec, ...]
    schedule: tuple[Stage, ...]
    input_buffer: str
    latent_buffer: str                 # encoder output (S, d_model), before the head
    logits_buffer: str | None          # None for a pre-training (encoder-only) model
    opset: int
    ir_version: int
    checkpoint: dict | None = None     # {"path", "sha256"} of the weights, when exported from a file
    mamba_form: str = "step"           # MAMBA_FORMS; manifests written before it was recorded are "step"
    mamba_chunk: int | None = None     # tokens per chunk in the "chunk" form, else None
    # How the model's input windows are normalised (lumamba.normalise.spec, from the checkpoint's
    # lumamba_preprocess); the firmware applies the same method in lumamba_infer_counts().
    # Manifests written before it was recorded were z-scored.
    preprocess: dict = field(default_factory=normalisation_spec)
    producer: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise KeyError(f"manifest has no graph {name!r}; graphs: {', '.join(g.name for g in self.graphs)}")

    def buffer(self, name: str) -> BufferSpec:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(f"manifest has no buffer {name!r}")

    def shared_structures(self) -> dict[str, list[str]]:
        """Graph names grouped by structure fingerprint (groups of one included)."""
        groups: dict[str, list[str]] = {}
        for g in self.graphs:
            groups.setdefault(g.structure, []).append(g.name)
        return groups

    def check_values(self) -> None:
        """Every value read from manifest.json is of its type and within bounds, and every name is
        plain text: names reach generated C (comments, identifiers) and file paths, so a crafted
        manifest must not be able to inject code or point outside the export directory."""
        for what, value in (("n_classes", self.n_classes), ("n_samples", self.n_samples),
                            ("n_patches", self.n_patches), ("opset", self.opset), ("ir_version", self.ir_version)):
            least = 0 if what == "n_classes" else 1     # 0 classes: an encoder-only (pre-training) export
            if type(value) is not int or not least <= value <= MAX_DIM:
                raise ValueError(f"{what} must be an integer in [{least}, {MAX_DIM}], got {value!r}")
        check_spec(self.preprocess, "preprocess")
        check_mamba_form(self.mamba_form)
        if (self.mamba_chunk is None) != (self.mamba_form != "chunk") or not (
                self.mamba_chunk is None or (type(self.mamba_chunk) is int and 0 < self.mamba_chunk <= MAX_DIM)):
            raise ValueError(f"mamba_chunk must be a positive integer in the chunk Mamba form and absent otherwise, "
                             f"got {self.mamba_chunk!r} with mamba_form {self.mamba_form!r}")
        if not self.channel_names:
            raise ValueError("channel_names is empty")
        for name in self.channel_names:
            _check_name("channel name", name, CHANNEL_NAME)
        for g in self.graphs:
            _check_name("graph name", g.name)
            _check_name(f"graph {g.name!r} file", g.file)
            if not g.file.endswith(".onnx") or g.file.startswith("."):
                raise ValueError(f"graph {g.name!r}: file {g.file!r} must be a plain *.onnx file name")
            _check_name(f"graph {g.name!r} structure", g.structure)
            for t in (*g.inputs, *g.outputs):
                _check_name(f"graph {g.name!r} port", t.name)
                _check_shape(f"graph {g.name!r} port {t.name!r}", t.shape)
        for b in self.buffers:
            _check_name("buffer name", b.name)
            _check_shape(f"buffer {b.name!r}", b.shape)
        for stage in self.schedule:
            for name in (*stage.zero, *(b.buffer for b in (*stage.inputs, *stage.outputs))):
                _check_name(f"stage {stage.graph!r} buffer", name)

    def validate(self) -> None:
        """Check the values (`check_values`), then that the schedule's bindings agree with the
        graphs' ports and the buffers' shapes."""
        self.check_values()
        graphs = {g.name: g for g in self.graphs}
        buffers = {b.name: b for b in self.buffers}
        for name in (self.input_buffer, self.latent_buffer, self.logits_buffer):
            if name is not None and name not in buffers:
                raise ValueError(f"manifest names buffer {name!r} but does not declare it")
        for b in self.buffers:
            if b.kind not in BUFFER_KINDS:
                raise ValueError(f"buffer {b.name!r}: kind {b.kind!r} is not one of {BUFFER_KINDS}")
            b.check()
        for i, stage in enumerate(self.schedule):
            where = f"stage {i} ({stage.graph})"
            if stage.graph not in graphs:
                raise ValueError(f"{where}: unknown graph")
            if stage.loop not in LOOPS:
                raise ValueError(f"{where}: loop {stage.loop!r} is not one of {LOOPS}")
            self._check_span(where, stage)
            g = graphs[stage.graph]
            for ports, bindings, what in ((g.inputs, stage.inputs, "input"), (g.outputs, stage.outputs, "output")):
                shapes = {p.name: p.shape for p in ports}
                if sorted(shapes) != sorted(b.port for b in bindings):
                    raise ValueError(f"{where}: {what} bindings {sorted(b.port for b in bindings)} "
                                     f"do not match the graph's {what}s {sorted(shapes)}")
                for b in bindings:
                    if b.buffer not in buffers:
                        raise ValueError(f"{where}: port {b.port!r} bound to unknown buffer {b.buffer!r}")
                    if (b.row or b.patch) and stage.loop == "once":
                        raise ValueError(f"{where}: {'row' if b.row else 'patch'} binding {b.port!r} outside a loop")
                    shape = buffers[b.buffer].shape
                    expected = (1, *shape[1:]) if b.row else shape
                    if b.patch:
                        expected = self._check_patch_binding(where, b, what)
                    if b.rows is not None:
                        expected = self._check_rows_binding(where, b, shape)
                    # t runs over the span (else all S tokens): row t must exist, and a full loop
                    # reads every row
                    last = stage.span[1] if stage.span is not None else self.n_patches
                    if b.row and (shape[0] < last if stage.span is not None else shape[0] != self.n_patches):
                        raise ValueError(f"{where}: row binding {b.port!r} to {b.buffer!r} of {shape[0]} rows, "
                                         f"not {'at least ' if stage.span is not None else ''}S={last}")
                    if tuple(shapes[b.port]) != tuple(expected):
                        raise ValueError(f"{where}: port {b.port!r} has shape {tuple(shapes[b.port])} but "
                                         f"buffer {b.buffer!r} gives {tuple(expected)}")
            for name in stage.zero:
                if buffers.get(name) is None or buffers[name].kind != "state":
                    raise ValueError(f"{where}: zeroes {name!r}, which is not a state buffer")

    def _check_span(self, where: str, stage: Stage) -> None:
        """A span is a non-empty token range of a loop stage, within the window's S tokens."""
        if stage.span is None:
            return
        span = stage.span
        if stage.loop == "once" or not isinstance(span, tuple) or len(span) != 2 or not all(type(v) is int for v in span) \
                or not 0 <= span[0] < span[1] <= self.n_patches:
            raise ValueError(f"{where}: span {span!r} must be a range (a, b), 0 <= a < b <= S={self.n_patches}, "
                             f"of a forward or reverse loop (loop {stage.loop!r})")

    @staticmethod
    def _check_rows_binding(where: str, b: Binding, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The port shape (b - a, ...) of a rows binding [a, b), which must lie in the buffer."""
        rows = b.rows
        if b.row or b.patch or not isinstance(rows, tuple) or len(rows) != 2 or not all(type(v) is int for v in rows) \
                or not 0 <= rows[0] < rows[1] <= shape[0]:
            raise ValueError(f"{where}: rows binding {b.port!r} to {b.buffer!r}: rows {rows!r} must be a range "
                             f"(a, b), 0 <= a < b <= {shape[0]}, and not also a row or patch binding")
        return (rows[1] - rows[0], *shape[1:])

    def _check_patch_binding(self, where: str, b: Binding, what: str) -> tuple[int, ...]:
        """The port shape (1, C, P) of a patch binding, which must read the input window."""
        if what != "input" or b.row or b.buffer != self.input_buffer:
            raise ValueError(f"{where}: patch binding {b.port!r} must be an input reading the input buffer "
                             f"{self.input_buffer!r} (not a row binding), got {what} of {b.buffer!r}")
        if self.n_samples % self.n_patches:
            raise ValueError(f"{where}: patch binding {b.port!r}: n_samples {self.n_samples} is not a multiple "
                             f"of n_patches {self.n_patches}")
        return (1, self.n_channels, self.n_samples // self.n_patches)

    def to_json(self) -> str:
        d = asdict(self)
        d["n_channels"] = self.n_channels
        for b in d["buffers"]:   # float32 buffers are written as before int8 storage existed
            if b["dtype"] == "float32":
                for key in ("dtype", "scale", "zero_point"):
                    del b[key]
        return json.dumps(d, indent=1)

    def save(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / MANIFEST_NAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        if d.get("format") != FORMAT or d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} manifest of version {FORMAT_VERSION} "
                             f"(found format={d.get('format')!r}, version={d.get('format_version')!r})")
        d = dict(d)
        d.pop("n_channels", None)

        def tensors(items):
            return tuple(TensorSpec(t["name"], tuple(t["shape"])) for t in items)

        def bindings(items):
            return tuple(Binding(**{**b, "rows": _pair(b.get("rows"))}) for b in items)

        d["channel_names"] = tuple(d["channel_names"])
        d["graphs"] = tuple(GraphSpec(**{**g, "inputs": tensors(g["inputs"]), "outputs": tensors(g["outputs"]),
                                         "sources": tuple(g["sources"])}) for g in d["graphs"])
        d["buffers"] = tuple(BufferSpec(b["name"], tuple(b["shape"]), b["kind"],
                                        **{k: b[k] for k in ("dtype", "scale", "zero_point") if k in b})
                             for b in d["buffers"])
        d["schedule"] = tuple(Stage(s["graph"], s["loop"], bindings(s["inputs"]), bindings(s["outputs"]),
                                    tuple(s["zero"]), _pair(s.get("span"))) for s in d["schedule"])
        manifest = cls(**d)
        manifest.validate()
        return manifest

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Manifest":
        """Read `manifest.json` from an export directory (or the file itself)."""
        path = Path(out_dir)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX export manifest at {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e
