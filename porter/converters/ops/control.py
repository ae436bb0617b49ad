"""Control flow and non-tensor values: Loop, If, Scan, SequenceMap, Sequence*, Optional*.

Subgraph attributes become sub-plans (:func:`porter.converters.builder.convert_subgraph`) whose
extra inputs are the outer-scope values the body reads; the converter appends those names to
the node's inputs so the plan feeds them like any other input. At runtime a sequence is a
python list of tensors (a tensor is accepted too and read along its first axis) and an
optional is its value or None.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter
from porter.errors import FormatError

_TORCH_SINCE = (1, 11, 13, 16, 19, 21, 23, 24, 25)


# ---- subgraph plumbing ----------------------------------------------------------------------

def _bodies(node: Node, ctx: Context, graphs: list) -> tuple[list[nn.Module], list[In]]:
    """Sub-plans for ``graphs`` and the ``In`` markers of the runtime outer values they read."""
    from porter.converters.builder import convert_subgraph, outer_names

    start = len(node.inputs)
    block: list[str] = []
    for g in graphs:
        block += [n for n in outer_names(g) if n not in block]
    node.inputs.extend(block)
    runtime = [start + k for k, _ in enumerate(block) if not ctx.is_const(start + k)]
    mods = []
    for g in graphs:
        outer = {}
        for n in outer_names(g):
            i = start + block.index(n)
            outer[n] = ctx.const(i) if ctx.is_const(i) else (ctx.shape(i), ctx.elem_type(i))
        mods.append(_Body(convert_subgraph(g, node.opsets or {"": node.opset}, outer),
                          [runtime.index(start + block.index(n)) for n in outer_names(g)
                           if not ctx.is_const(start + block.index(n))]))
    return mods, [In(i) for i in runtime]


class _Body(nn.Module):
    """A subgraph plan plus which of the node's outer values it reads (by position)."""

    def __init__(self, plan: nn.Module, outer: list[int]) -> None:
        super().__init__()
        self.plan = plan
        self.outer = outer

    def forward(self, args: list, outer: tuple) -> list:
        return self.plan._run(tuple(args) + tuple(outer[k] for k in self.outer))


def _seq(x) -> list:
    """A runtime sequence as a list (a tensor is read along its first axis)."""
    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        return list(x.unbind(0))
    return list(x)


def _stack(vals: list, axis: int = 0, reverse: bool = False) -> torch.Tensor:
    if reverse:
        vals = vals[::-1]
    if not vals:
        return torch.empty(0)
    return torch.stack(vals, dim=axis % (vals[0].dim() + 1))


# ---- Loop -----------------------------------------------------------------------------------

#: Most iterations a Loop may run (porter's module, and a constant trip count with no way to
#: stop earlier, refused at conversion before onnxruntime spins on it); PORTER_MAX_LOOP_TRIPS.
MAX_LOOP_TRIPS = int(os.environ.get("PORTER_MAX_LOOP_TRIPS", 10_000_000))


def _never_stops_early(node: Node, ctx: Context) -> bool:
    """Whether the body's condition output is the condition input passed through (or absent
    cond): then the loop runs its full trip count."""
    body = node.attr("body")
    if not ctx.has(1):
        return True
    if body is None or len(body.input) < 2 or not body.output:
        return False
    cond_in, cond_out = body.input[1].name, body.output[0].name
    if cond_out == cond_in:
        return True
    for n in body.node:
        if cond_out in n.output:
            return n.op_type == "Identity" and list(n.input) == [cond_in]
    return False

class Loop(nn.Module):
    """ONNX Loop: ``(M, cond, *carried, *outer) -> (*final carried, *stacked scan outputs)``."""

    def __init__(self, body: _Body, n_carried: int, n_out: int) -> None:
        super().__init__()
        self.body = body
        self.n_carried, self.n_out = n_carried, n_out

    def forward(self, m, cond, *rest):
        carried = list(rest[:self.n_carried])
        outer = rest[self.n_carried:]
        trip = None if m is None else int(m)
        go = True if cond is None else bool(cond)
        scans: list[list] = []
        it = 0
        while go and (trip is None or it < trip):
            if it >= MAX_LOOP_TRIPS:
                raise FormatError(f"Loop ran {it} iterations, porter's limit "
                                  "(raise PORTER_MAX_LOOP_TRIPS)")
            it_t = torch.tensor(it, dtype=m.dtype if m is not None else torch.int64)
            cond_t = torch.tensor(go) if cond is None else torch.tensor(go, dtype=cond.dtype)
            outs = self.body([it_t, cond_t, *carried], outer)
            go = bool(outs[0])
            carried = list(outs[1:1 + self.n_carried])
            k = outs[1 + self.n_carried:]
            if not scans:
                scans = [[] for _ in k]
            for acc, v in zip(scans, k):
                acc.append(v)
            it += 1
        n_scan = len(self.body.plan._output_slots) - 1 - self.n_carried
        stacked = [_stack(s) for s in scans] if scans else [torch.empty(0)] * n_scan
        outs = carried + stacked
        return outs[0] if self.n_out == 1 else tuple(outs[:self.n_out])


@converter("Loop", since=_TORCH_SINCE)
def _loop(node: Node, ctx: Context) -> Op:
    n_in, n_out = len(node.inputs), len(node.outputs)
    n_carried = n_in - 2
    trips = ctx.const(0)
    if trips is not None and np.asarray(trips).size == 1 and int(np.asarray(trips).reshape(
            -1)[0]) > MAX_LOOP_TRIPS and (not ctx.is_const(1) or bool(np.asarray(
            ctx.const(1)).reshape(-1)[0])) and _never_stops_early(node, ctx):
        raise FormatError(f"Loop {node.name or ''!r} always runs its constant trip count "
                          f"{int(np.asarray(trips).reshape(-1)[0])}, over porter's limit of "
                          f"{MAX_LOOP_TRIPS} (raise PORTER_MAX_LOOP_TRIPS)")
    (body,), outer = _bodies(node, ctx, [node.attr("body")])
    ins = [In(0) if ctx.has(0) else None, In(1) if ctx.has(1) else None]
    ins += [In(i) for i in range(2, n_in)]
    return Op(Loop(body, n_carried, n_out), (*ins, *outer), n_out=n_out)


# ---- If -------------------------------------------------------------------------------------

class If(nn.Module):
    """ONNX If: run ``then_branch`` or ``else_branch`` on the outer values they read."""

    def __init__(self, then_body: _Body, else_body: _Body, n_out: int) -> None:
        super().__init__()
        self.then_body = then_body
        self.else_body = else_body
        self.n_out = n_out

    def forward(self, cond, *outer):
        outs = (self.then_body if bool(cond) else self.else_body)([], outer)
        return outs[0] if self.n_out == 1 else tuple(outs)


@converter("If", since=_TORCH_SINCE)
def _if(node: Node, ctx: Context) -> Op:
    (then_b, else_b), outer = _bodies(node, ctx, [node.attr("then_branch"),
                                                  node.attr("else_branch")])
    n_out = len(node.outputs)
    return Op(If(then_b, else_b, n_out), (In(0), *outer), n_out=n_out)


# ---- Scan -----------------------------------------------------------------------------------

class Scan(nn.Module):
    """ONNX Scan (opset 9+): ``(*states, *scan inputs, *outer) -> (*states, *scan outputs)``.

    ``batched`` is opset 8's form: a leading batch axis on every input and output, the
    sequence on axis 1, and an optional ``sequence_lens`` first input.
    """

    def __init__(self, body: _Body, n_state: int, n_scan: int, in_axes: list[int],
                 in_dirs: list[int], out_axes: list[int], out_dirs: list[int],
                 batched: bool = False) -> None:
        super().__init__()
        self.body = body
        self.n_state, self.n_scan = n_state, n_scan
        self.in_axes, self.in_dirs = in_axes, in_dirs
        self.out_axes, self.out_dirs = out_axes, out_dirs
        self.batched = batched

    def _scan(self, states: list, xs: list, outer: tuple, length: int | None = None) -> list:
        slices = []
        for x, ax, d in zip(xs, self.in_axes, self.in_dirs):
            s = list(x.unbind(ax % x.dim()))
            if length is not None:
                s = s[:length]
            slices.append(s[::-1] if d else s)
        n = len(slices[0]) if slices else 0
        acc: list[list] = []
        for t in range(n):
            outs = self.body([*states, *(s[t] for s in slices)], outer)
            states = list(outs[:self.n_state])
            ys = outs[self.n_state:]
            if not acc:
                acc = [[] for _ in ys]
            for a, y in zip(acc, ys):
                a.append(y)
        n_y = len(self.body.plan._output_slots) - self.n_state
        outs_y = [_stack(a, ax, bool(d)) for a, ax, d in
                  zip(acc or [[]] * n_y, self.out_axes, self.out_dirs)]
        return states + outs_y

    def forward(self, *args):
        if not self.batched:
            states = list(args[:self.n_state])
            xs = list(args[self.n_state:self.n_state + self.n_scan])
            return tuple(self._scan(states, xs, args[self.n_state + self.n_scan:]))
        lens, args = args[0], args[1:]
        states = args[:self.n_state]
        xs = args[self.n_state:self.n_state + self.n_scan]
        outer = args[self.n_state + self.n_scan:]
        per = []
        for b in range(xs[0].shape[0]):
            n = None if lens is None else int(lens[b])
            res = self._scan([s[b] for s in states], [x[b] for x in xs], outer, n)
            # scan outputs of a shorter sequence are zero-padded to the batch's length
            full = xs[0].shape[1]
            per.append(res[:self.n_state] + [
                torch.cat([y, y.new_zeros((full - y.shape[0], *y.shape[1:]))]) if y.shape[0] < full
                else y for y in res[self.n_state:]])
        return tuple(torch.stack([p[k] for p in per]) for k in range(len(per[0])))


@converter("Scan", since=(8, 9, 11, 16, 19, 21, 23, 24, 25))
def _scan(node: Node, ctx: Context) -> Op:
    n_scan = int(node.attr("num_scan_inputs"))
    batched = node.opset < 9
    first = 1 if batched else 0
    n_in = len(node.inputs)
    n_state = n_in - first - n_scan
    n_y = len(node.outputs) - n_state
    dirs = node.attr("directions") if batched else node.attr("scan_input_directions")
    in_dirs = list(dirs or [0] * n_scan)
    in_axes = list(node.attr("scan_input_axes") or [0] * n_scan)
    out_axes = list(node.attr("scan_output_axes") or [0] * n_y)
    out_dirs = list(node.attr("scan_output_directions") or [0] * n_y)
    (body,), outer = _bodies(node, ctx, [node.attr("body")])
    ins = [In(i) for i in range(first, n_in)]
    if batched:
        ins = [In(0) if ctx.has(0) else None, *ins]
    mod = Scan(body, n_state, n_scan, in_axes, in_dirs, out_axes, out_dirs, batched)
    return Op(mod, (*ins, *outer), n_out=len(node.outputs))


# ---- SequenceMap ----------------------------------------------------------------------------

class SequenceMap(nn.Module):
    """ONNX SequenceMap: run the body on the i-th element of every sequence input."""

    def __init__(self, body: _Body, n_in: int, is_seq: list[bool | None], n_out: int) -> None:
        super().__init__()
        self.body = body
        self.n_in, self.is_seq, self.n_out = n_in, is_seq, n_out

    def forward(self, *args):
        xs, outer = args[:self.n_in], args[self.n_in:]
        flags = [isinstance(x, (list, tuple)) if s is None else s for x, s in zip(xs, self.is_seq)]
        seqs = [_seq(x) if s else x for x, s in zip(xs, flags)]
        res: list[list] = [[] for _ in range(self.n_out)]
        for i in range(len(seqs[0])):
            outs = self.body([v[i] if s else v for v, s in zip(seqs, flags)], outer)
            for acc, y in zip(res, outs):
                acc.append(y)
        return res[0] if self.n_out == 1 else tuple(res)


@converter("SequenceMap", since=(17,))
def _sequence_map(node: Node, ctx: Context) -> Op:
    n_in = len(node.inputs)
    # a tensor of known type is broadcast to every call; a list is read element by element
    is_seq = [True] + [None if ctx.elem_type(i) is None else False for i in range(1, n_in)]
    (body,), outer = _bodies(node, ctx, [node.attr("body")])
    return Op(SequenceMap(body, n_in, is_seq, len(node.outputs)),
              (*(In(i) for i in range(n_in)), *outer), n_out=len(node.outputs))


# ---- sequences ------------------------------------------------------------------------------

def sequence_empty() -> list:
    return []


def sequence_construct(*xs: torch.Tensor) -> list:
    return list(xs)


def sequence_at(seq, position: torch.Tensor) -> torch.Tensor:
    seq = list(seq) if isinstance(seq, (list, tuple)) else list(seq.unbind(0))
    return seq[int(position)]


def sequence_insert(seq, x: torch.Tensor, position: torch.Tensor | None = None) -> list:
    out = list(seq) if isinstance(seq, (list, tuple)) else list(seq.unbind(0))
    if position is None:
        out.append(x)
    else:
        p = int(position)
        out.insert(p + len(out) if p < 0 else p, x)
    return out


def sequence_erase(seq, position: torch.Tensor | None = None) -> list:
    out = list(seq) if isinstance(seq, (list, tuple)) else list(seq.unbind(0))
    del out[-1 if position is None else int(position)]
    return out


def sequence_length(seq) -> torch.Tensor:
    n = len(seq) if isinstance(seq, (list, tuple)) else seq.shape[0]
    return torch.tensor(n, dtype=torch.int64)


def concat_from_sequence(seq, axis: int, new_axis: int = 0) -> torch.Tensor:
    seq = list(seq) if isinstance(seq, (list, tuple)) else list(seq.unbind(0))
    if new_axis:
        return torch.stack(seq, dim=axis % (seq[0].dim() + 1))
    return torch.cat(seq, dim=axis)


def split_to_sequence(x: torch.Tensor, split: torch.Tensor | None = None, axis: int = 0,
                      keepdims: int = 1) -> list:
    if split is None:
        parts = list(torch.split(x, 1, dim=axis))
        return [p.squeeze(axis) for p in parts] if not keepdims else parts
    if split.dim() == 0:
        return list(torch.split(x, int(split), dim=axis))
    return list(torch.split(x, [int(s) for s in split.tolist()], dim=axis))


@converter("SequenceEmpty", since=(11,))
def _sequence_empty(node: Node, ctx: Context) -> Op:
    return Op(sequence_empty)


@converter("SequenceConstruct", since=(11,))
def _sequence_construct(node: Node, ctx: Context) -> Op:
    return Op(sequence_construct, tuple(In(i) for i in range(len(node.inputs))))


@converter("SequenceAt", since=(11,))
def _sequence_at(node: Node, ctx: Context) -> Op:
    return Op(sequence_at, (In(0), In(1)))


@converter("SequenceInsert", since=(11,))
def _sequence_insert(node: Node, ctx: Context) -> Op:
    return Op(sequence_insert, (In(0), In(1), In(2) if ctx.has(2) else None))


@converter("SequenceErase", since=(11,))
def _sequence_erase(node: Node, ctx: Context) -> Op:
    return Op(sequence_erase, (In(0), In(1) if ctx.has(1) else None))


@converter("SequenceLength", since=(11,))
def _sequence_length(node: Node, ctx: Context) -> Op:
    return Op(sequence_length, (In(0),))


@converter("ConcatFromSequence", since=(11,))
def _concat_from_sequence(node: Node, ctx: Context) -> Op:
    return Op(concat_from_sequence, (In(0), int(node.attr("axis"))),
              {"new_axis": int(node.attr("new_axis", 0))})


@converter("SplitToSequence", since=(11, 24))
def _split_to_sequence(node: Node, ctx: Context) -> Op:
    return Op(split_to_sequence, (In(0), In(1) if ctx.has(1) else None),
              {"axis": int(node.attr("axis", 0)), "keepdims": int(node.attr("keepdims", 1))})


# ---- optionals ------------------------------------------------------------------------------

def optional_value(x=None):
    """An optional holding ``x`` (None: empty)."""
    return x


def optional_has_element(x=None) -> torch.Tensor:
    return torch.tensor(x is not None)


def optional_get_element(x):
    if x is None:
        raise ValueError("OptionalGetElement on an empty optional")
    return x


@converter("Optional", since=(15, 28))
def _optional(node: Node, ctx: Context) -> Op:
    return Op(optional_value, (In(0) if ctx.has(0) else None,))


@converter("OptionalHasElement", since=(15, 18, 28))
def _optional_has_element(node: Node, ctx: Context) -> Op:
    return Op(optional_has_element, (In(0) if ctx.has(0) else None,))


@converter("OptionalGetElement", since=(15, 18, 28))
def _optional_get_element(node: Node, ctx: Context) -> Op:
    return Op(optional_get_element, (In(0),))
