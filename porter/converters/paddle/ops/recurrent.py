"""``rnn`` with ``mode="LSTM"`` (PIR): Paddle's multi-layer (bi)LSTM, time-major.

Paddle and torch agree on the LSTM gates (i, f, g, o) and weight shapes; Paddle's weight list
holds every ``w_ih, w_hh`` (layer-major, forward before reverse), then every ``b_ih, b_hh`` in
the same order, which is copied verbatim into an ``nn.LSTM``.
"""

from __future__ import annotations

import torch
from torch import nn

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.registry import paddle_op


@paddle_op("pd_op.rnn")
def _rnn(op: PaddleOp, ctx: Context) -> Op:
    mode = str(op.attr("mode", "LSTM"))
    if mode != "LSTM":
        raise Unsupported(f"rnn mode {mode!r}")
    if ctx.has(3):
        raise Unsupported("rnn with sequence lengths")
    weights = ctx.const(2)
    if not isinstance(weights, (list, tuple)):
        raise Unsupported("rnn with computed weights")
    layers = int(op.attr("num_layers", 1))
    dirs = 2 if op.attr("is_bidirec", False) else 1
    hidden, size = int(op.attr("hidden_size")), int(op.attr("input_size"))
    n = layers * dirs
    if len(weights) not in (2 * n, 4 * n):
        raise Unsupported(f"rnn with {len(weights)} weights for {n} cells")
    has_bias = len(weights) == 4 * n
    lstm = nn.LSTM(size, hidden, layers, bias=has_bias, bidirectional=dirs == 2)
    with torch.no_grad():
        for k in range(n):
            suffix = f"l{k // dirs}" + ("_reverse" if k % dirs else "")
            getattr(lstm, f"weight_ih_{suffix}").copy_(weights[2 * k])
            getattr(lstm, f"weight_hh_{suffix}").copy_(weights[2 * k + 1])
            if has_bias:
                getattr(lstm, f"bias_ih_{suffix}").copy_(weights[2 * n + 2 * k])
                getattr(lstm, f"bias_hh_{suffix}").copy_(weights[2 * n + 2 * k + 1])
    # nn.LSTM returns (out, (h, c)): PIR's outputs are (out, dropout state, [h, c], reserve)
    op.outputs[:] = [op.outputs[0], op.outputs[2] if len(op.outputs) > 2 else None]
    return Op(lstm.eval(), (In(0), In(1)) if ctx.has(1) else (In(0),), n_out=2)
