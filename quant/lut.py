"""Element-wise functions of one int8 tensor folded into 256-entry lookup tables (`lut` nodes).

Between two int8 layers the integer graph often computes an element-wise function of a single
int8 tensor through float ops: `dequantize -> (Add bias) -> GELU | softplus | SiLU ... -> quantize`.
An int8 input has 256 values, so the whole chain is a table. `fold_lookup_tables` finds such
chains and replaces them with one node

    lut   q(i8) -> y,   y[..., c] = table[c, q[..., c] + 128]

where `table` (C, 256) is int8 when the chain ends in a `quantize` (int8 -> int8) and float32
otherwise (int8 -> float, e.g. the scan's dt = softplus(dt_proj(x))); C is 1, or the size of the
last axis when a constant of the chain is per channel (a bias along the last axis).

The table is computed by running the chain's own nodes with the golden model's ops
(`ops.run_node`) on the 256 codes, so the rewritten graph gives the same bits as the original
by construction: every op of the chain is element-wise, and the golden model's element-wise
float32 arithmetic gives each element the same result whatever the array around it
(tests/test_quant_fmath.py checks that).
"""
from __future__ import annotations

import numpy as np

from .ops import run_node
from .qgraph import QGraph, QNode

# ops whose output element depends only on the same element of each input (with broadcasting)
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Exp", "Erf", "Atan", "Sigmoid",
                         "Softplus", "Greater", "Less", "LessOrEqual", "Where", "IsNaN", "Cast"})
# a chain is worth a table when it holds one of these (a dequantize + add is cheaper than a lookup)
COSTLY = frozenset({"Exp", "Erf", "Atan", "Sigmoid", "Softplus", "Div", "Sqrt"})
BOOL_OUTPUT = frozenset({"Greater", "Less", "LessOrEqual", "IsNaN"})
CODES = np.arange(-128, 128).astype(np.int8)
# flash per table: C x 256 entries of 1 (int8) or 4 (float32) bytes. 64 KiB admits the frontend GELU
# (a bias per channel: 168 int8 tables, 42 KiB), which saves ~11 M of 86 M instructions per window
# of the demo model on the Cortex-M4F (BENCHMARKS.md, issue 11)
DEFAULT_MAX_TABLE_BYTES = 65536


def _channels(graph: QGraph, name: str, last: int) -> int | None:
    """1 for a scalar constant, `last` for one that varies along the last axis only, else None."""
    shape = graph.constants[name].shape
    if int(np.prod(shape)) == 1:
        return 1
    if shape[-1] == last and int(np.prod(shape)) == last:
        return last
    return None


class _Graph:
    """Readers of every tensor, and the protected names (graph outputs, taps)."""

    def __init__(self, graph: QGraph):
        self.readers: dict[str, list[int]] = {}
        for k, node in enumerate(graph.nodes):
            for name in node.inputs:
                if name:
                    self.readers.setdefault(name, []).append(k)
        self.protected = {n for n, _ in graph.outputs} | {t["tensor"] for t in graph.taps.values()}


def _region(graph: QGraph, start: int, last: int) -> tuple[list[int], int] | None:
    """Element-wise nodes after dequantize node `start` that read only its output, each other's
    outputs and suitable constants: (their indices, table channels), or None."""
    inside = {graph.nodes[start].outputs[0]}
    members, channels = [], 1
    for k in range(start + 1, len(graph.nodes)):
        node = graph.nodes[k]
        if node.op not in ELEMENTWISE or not any(i in inside for i in node.inputs):
            continue
        ok = True
        for name in node.inputs:
            if not name or name in inside:
                continue
            c = _channels(graph, name, last) if name in graph.constants else None
            if c is None or (c > 1 and channels not in (1, c)):
                ok = False
                break
            channels = max(channels, c)
        if ok:
            members.append(k)
            inside.update(node.outputs)
    return (members, channels) if members else None


def _best_exit(graph: QGraph, info: _Graph, members: list[int], fits) -> tuple[str, list[int]] | None:
    """The region tensor whose ancestors in the region form the largest chain that is costly,
    self-contained (no intermediate read outside it) and `fits(exit, chain)` (the table size):
    (tensor, its chain's node indices)."""
    producer = {graph.nodes[k].outputs[0]: k for k in members}
    best = None
    for exit_name, k_exit in producer.items():
        if graph.nodes[k_exit].op in BOOL_OUTPUT:
            continue
        chain, todo = set(), [k_exit]
        while todo:
            k = todo.pop()
            if k in chain:
                continue
            chain.add(k)
            todo.extend(producer[i] for i in graph.nodes[k].inputs if i in producer)
        inner = [graph.nodes[k].outputs[0] for k in chain if k != k_exit]
        if any(n in info.protected or any(r not in chain for r in info.readers.get(n, [])) for n in inner):
            continue
        if not any(graph.nodes[k].op in COSTLY for k in chain) or not fits(exit_name, sorted(chain)):
            continue
        if best is None or len(chain) >= len(best[1]):
            best = (exit_name, sorted(chain))
    return best


def _quantize_tail(graph: QGraph, info: _Graph, exit_name: str) -> int | None:
    """Index of the quantize that is the only reader of `exit_name` (an int8 -> int8 table), or None."""
    readers = info.readers.get(exit_name, [])
    if len(readers) == 1 and graph.nodes[readers[0]].op == "quantize" and exit_name not in info.protected:
        return readers[0]
    return None


def _table(graph: QGraph, nodes: list[QNode], channels: int) -> np.ndarray:
    """Run `nodes` (dequantize first) on every code, per channel: (channels, 256)."""
    env = {nodes[0].inputs[0]: np.ascontiguousarray(np.broadcast_to(CODES[:, None], (256, channels)))}
    with np.errstate(all="ignore"):
        for node in nodes:
            values = [env[i] if i in env else graph.constants[i] if i else None for i in node.inputs]
            env.update(zip(node.outputs, run_node(node, values, {})))
    out = env[nodes[-1].outputs[0]]
    return np.ascontiguousarray(out.reshape(256, channels).T)


def fold_lookup_tables(graph: QGraph, max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES) -> QGraph:
    """`graph` with every costly element-wise chain of one int8 tensor replaced by a `lut` node
    (see the module docstring); chains whose table would exceed `max_table_bytes` stay as they are.
    Works in place and returns `graph`."""
    if not graph.tensors:
        raise ValueError(f"graph {graph.name}: fold_lookup_tables needs the tensor shapes (graph.tensors)")
    done: set[str] = set()
    while True:
        info = _Graph(graph)
        for start, node in enumerate(graph.nodes):
            if node.op != "dequantize" or node.name in done:
                continue
            if _fold_one(graph, info, start, max_table_bytes):
                break           # the graph changed: look again (this dequantize may feed another chain)
            done.add(node.name)
        else:
            return graph


def _fold_one(graph: QGraph, info: _Graph, start: int, max_table_bytes: int) -> bool:
    deq = graph.nodes[start]
    shape = graph.tensors[deq.outputs[0]]["shape"]
    last = int(shape[-1]) if shape else 1
    found = _region(graph, start, last)
    if found is None:
        return False

    def channels(chain: list[int]) -> int:
        return found[1] if any(_uses_channels(graph, graph.nodes[k], last) for k in chain) else 1

    def fits(exit_name: str, chain: list[int]) -> bool:
        entry = 1 if _quantize_tail(graph, info, exit_name) is not None else 4
        return channels(chain) * 256 * entry <= max_table_bytes

    exit_chain = _best_exit(graph, info, found[0], fits)
    if exit_chain is None:
        return False
    exit_name, chain = exit_chain
    removed, output = list(chain), exit_name
    tail = _quantize_tail(graph, info, exit_name)
    if tail is not None:                 # int8 -> int8: the table holds the quantised values
        removed.append(tail)
        output = graph.nodes[tail].outputs[0]
    nodes = [deq] + [graph.nodes[k] for k in sorted(removed)]
    table = _table(graph, nodes, channels(chain))
    key = f"{output}.lut"
    graph.constants[f"{key}.table"] = table
    attrs = {"channels": int(table.shape[0])}
    if tail is not None:                 # keep the folded quantize's parameters (the QDQ set reads them)
        attrs.update(scale=graph.nodes[tail].attrs["scale"], zero_point=graph.nodes[tail].attrs["zero_point"])
    lut = QNode("lut", key, [deq.inputs[0]], [output], attrs, {"table": f"{key}.table"})
    t = deq.outputs[0]
    keep_deq = t in info.protected or any(r not in removed for r in info.readers.get(t, []))
    if keep_deq:       # the float value is read elsewhere too: the lut comes right after the dequantize
        graph.nodes = _insert_after(graph.nodes, start, lut, set(removed))
    else:
        graph.nodes = [lut if k == start else n for k, n in enumerate(graph.nodes) if k not in removed]
    _forget_tensors(graph, nodes, output)
    return True


def _uses_channels(graph: QGraph, node: QNode, last: int) -> bool:
    return any(i in graph.constants and _channels(graph, i, last) == last and last > 1 for i in node.inputs)


def _insert_after(nodes: list[QNode], start: int, lut: QNode, drop: set[int]) -> list[QNode]:
    out = []
    for k, n in enumerate(nodes):
        if k not in drop:
            out.append(n)
        if k == start:
            out.append(lut)
    return out


def _forget_tensors(graph: QGraph, removed: list[QNode], output: str) -> None:
    """Drop the shapes of values no node computes any more (the lut's output keeps its entry)."""
    computed = {o for n in graph.nodes for o in n.outputs}
    for node in removed:
        for name in node.outputs:
            if name != output and name not in computed:
                graph.tensors.pop(name, None)
