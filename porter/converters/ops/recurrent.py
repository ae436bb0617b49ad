"""Recurrent layers: RNN, GRU, LSTM as explicit per-step math (every direction and option)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter

# activation -> (default alpha, default beta); None where the function takes no parameter
_ACT_DEFAULTS = {
    "relu": (None, None), "tanh": (None, None), "sigmoid": (None, None),
    "softsign": (None, None), "softplus": (None, None), "affine": (1.0, 0.0),
    "leakyrelu": (0.01, None), "thresholdedrelu": (1.0, None), "scaledtanh": (1.0, 1.0),
    "hardsigmoid": (0.2, 0.5), "elu": (1.0, None),
}
_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


def rnn_activation(x: torch.Tensor, act: tuple) -> torch.Tensor:
    """One of the ONNX recurrent activations; ``act`` is (lowercase name, alpha, beta)."""
    name, alpha, beta = act
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "affine":
        return alpha * x + beta
    if name == "leakyrelu":
        return torch.where(x >= 0, x, alpha * x)
    if name == "thresholdedrelu":
        return torch.where(x > alpha, x, torch.zeros_like(x))
    if name == "scaledtanh":
        return alpha * torch.tanh(beta * x)
    if name == "hardsigmoid":
        return torch.clamp(alpha * x + beta, 0.0, 1.0)
    if name == "elu":
        return F.elu(x, alpha)  # exportable, unlike torch.expm1
    if name == "softsign":
        return x / (1 + x.abs())
    if name == "softplus":
        return torch.log1p(torch.exp(x))
    raise ValueError(f"unknown recurrent activation {name!r}")


def rnn_cell(kind: str, gx: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
             r: torch.Tensor, rb: torch.Tensor, p: torch.Tensor | None, acts: list,
             clip: float | None, linear_before_reset: int, input_forget: int):
    """One time step; ``gx`` is x @ W^T + Wb. Returns the new (h, c)."""
    def pre(v: torch.Tensor) -> torch.Tensor:
        return torch.clamp(v, -clip, clip) if clip is not None else v

    hid = h.shape[-1]
    if kind == "RNN":
        return rnn_activation(pre(gx + h @ r.T + rb), acts[0]), c
    if kind == "GRU":
        gh = h @ r[:2 * hid].T + rb[:2 * hid]
        z = rnn_activation(pre(gx[:, :hid] + gh[:, :hid]), acts[0])
        rt = rnn_activation(pre(gx[:, hid:2 * hid] + gh[:, hid:]), acts[0])
        if linear_before_reset:
            n = gx[:, 2 * hid:] + rt * (h @ r[2 * hid:].T + rb[2 * hid:])
        else:
            n = gx[:, 2 * hid:] + (rt * h) @ r[2 * hid:].T + rb[2 * hid:]
        n = rnn_activation(pre(n), acts[1])
        return (1 - z) * n + z * h, c
    g = gx + h @ r.T + rb  # LSTM gates i, o, f, c
    gi, go, gf, gc = g[:, :hid], g[:, hid:2 * hid], g[:, 2 * hid:3 * hid], g[:, 3 * hid:]
    if p is not None:
        gi = gi + p[:hid] * c
        gf = gf + p[2 * hid:] * c
    i = rnn_activation(pre(gi), acts[0])
    f = 1 - i if input_forget else rnn_activation(pre(gf), acts[0])
    c = f * c + i * rnn_activation(pre(gc), acts[1])
    if p is not None:
        go = go + p[hid:2 * hid] * c
    o = rnn_activation(pre(go), acts[0])
    return o * rnn_activation(c, acts[2]), c


def recurrent(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor | None,
              seq_lens: torch.Tensor | None, h0: torch.Tensor | None,
              c0: torch.Tensor | None = None, p: torch.Tensor | None = None, *, kind: str,
              acts: list, direction: str = "forward", clip: float | None = None, layout: int = 0,
              linear_before_reset: int = 0, input_forget: int = 0) -> tuple:
    """ONNX RNN / GRU / LSTM. ``acts`` holds each direction's activations (forward first).

    Steps past a batch entry's sequence length leave its state unchanged and output zeros; the
    reverse direction walks each entry's own valid steps backwards. Returns (Y, Y_h) and, for
    LSTM, Y_c.
    """
    if layout:
        x = x.transpose(0, 1)
        h0 = None if h0 is None else h0.transpose(0, 1)
        c0 = None if c0 is None else c0.transpose(0, 1)
    n_dir, n_hid = r.shape[0], r.shape[-1]
    seq, batch = x.shape[0], x.shape[1]
    # int64 spelled out: traced for ONNX export, a size-valued fill would otherwise be float
    t_idx = torch.arange(seq, device=x.device, dtype=torch.int64).unsqueeze(1)  # (seq, 1)
    lens = (torch.full((batch,), seq, device=x.device, dtype=torch.int64) if seq_lens is None
            else seq_lens.to(device=x.device, dtype=torch.int64))
    valid = t_idx < lens  # (seq, batch)
    ys, hs, cs = [], [], []
    n_act = len(acts) // n_dir
    for d in range(n_dir):
        xd = x
        reverse = d == 1 or direction == "reverse"
        if reverse:  # per-entry reversal of the valid steps (an involution)
            order = torch.where(valid, lens - 1 - t_idx, t_idx.expand(seq, batch))
            xd = torch.gather(x, 0, order.unsqueeze(-1).expand(x.shape))
        n_gate = w.shape[1]
        wb = b[d, :n_gate] if b is not None else torch.zeros(n_gate, dtype=x.dtype, device=x.device)
        rb = b[d, n_gate:] if b is not None else torch.zeros(n_gate, dtype=x.dtype, device=x.device)
        gx = xd @ w[d].T + wb  # (seq, batch, gates)
        h = h0[d] if h0 is not None else x.new_zeros(batch, n_hid)
        c = None
        if kind == "LSTM":
            c = c0[d] if c0 is not None else x.new_zeros(batch, n_hid)
        pd = p[d] if p is not None else None
        da = acts[d * n_act:(d + 1) * n_act]
        out = []
        for t in range(seq):
            h_new, c_new = rnn_cell(kind, gx[t], h, c, r[d], rb, pd, da, clip,
                                    linear_before_reset, input_forget)
            m = valid[t].unsqueeze(-1)
            h = torch.where(m, h_new, h)
            if c is not None:
                c = torch.where(m, c_new, c)
            out.append(torch.where(m, h_new, torch.zeros_like(h_new)))
        y = torch.stack(out) if out else x.new_zeros(0, batch, n_hid)
        if reverse:
            y = torch.gather(y, 0, order.unsqueeze(-1).expand(y.shape))
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y = torch.stack(ys, 1)  # (seq, dir, batch, hidden)
    y_h = torch.stack(hs)
    if layout:
        y, y_h = y.permute(2, 0, 1, 3), y_h.transpose(0, 1)
    if kind != "LSTM":
        return y, y_h
    y_c = torch.stack(cs)
    return y, y_h, y_c.transpose(0, 1) if layout else y_c


def _acts(node: Node, n_dir: int) -> list:
    names = node.attr("activations") or _DEFAULT_ACTS[node.op_type] * n_dir
    per_dir = len(_DEFAULT_ACTS[node.op_type])
    if len(names) < per_dir * n_dir:  # one direction's list given for both
        names = list(names[:per_dir]) * n_dir
    alphas = list(node.attr("activation_alpha") or [])
    betas = list(node.attr("activation_beta") or [])
    out = []
    for name in names[:per_dir * n_dir]:
        key = name.lower()
        if key not in _ACT_DEFAULTS:
            from porter.errors import UnsupportedOpError

            raise UnsupportedOpError(f"{node.op_type} activation {name}", node.opset)
        da, db = _ACT_DEFAULTS[key]
        alpha = (float(alphas.pop(0)) if alphas else da) if da is not None else None
        beta = (float(betas.pop(0)) if betas else db) if db is not None else None
        out.append((key, alpha, beta))
    return out


def _recurrent(node: Node, ctx: Context) -> Op:
    direction = node.attr("direction", "forward")
    n_dir = 2 if direction == "bidirectional" else 1
    clip = node.attr("clip")
    kw = {"kind": node.op_type, "acts": _acts(node, n_dir), "direction": direction,
          "clip": None if clip is None else float(clip), "layout": node.attr("layout", 0)}
    if node.op_type == "GRU":
        kw["linear_before_reset"] = node.attr("linear_before_reset", 0)
    if node.op_type == "LSTM":
        kw["input_forget"] = node.attr("input_forget", 0)
        args = tuple(In(i) for i in range(8))
    else:
        args = tuple(In(i) for i in range(6))
    return Op(recurrent, args, kw, n_out=3 if node.op_type == "LSTM" else 2)


converter("RNN", since=(1, 7, 14, 22))(_recurrent)
converter("GRU", since=(1, 3, 7, 14, 22))(_recurrent)
converter("LSTM", since=(1, 7, 14, 22))(_recurrent)
