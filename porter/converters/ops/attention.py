"""Attention family: Attention, RotaryEmbedding, SwiGLU, LinearAttention, CausalConvWithState,
TensorScatter, FlexAttention (ai.onnx.preview)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter

# softmax_precision: the ONNX float element types
_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def to_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, _ = x.shape
    return x.reshape(b, s, num_heads, -1).transpose(1, 2)


def masked_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where an all ``-inf`` row gives zeros instead of NaN."""
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    e = torch.exp(x - m)
    s = e.sum(dim=-1, keepdim=True)
    return e / torch.where(s == 0, torch.ones_like(s), s)


def attention_bias(q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device,
                   mask: torch.Tensor | None, offset: torch.Tensor | int, is_causal: bool,
                   left: int, right: int, nonpad: torch.Tensor | None) -> torch.Tensor:
    """The additive bias (0 / -inf / float mask) from mask, causal frontier, window, padding.

    ``offset`` is the number of valid keys preceding the query block: an int, or a per-batch
    tensor (external cache) that makes the bias (batch, 1, q, kv).
    """
    neg = torch.tensor(-math.inf, dtype=dtype, device=device)
    zero = torch.tensor(0.0, dtype=dtype, device=device)
    bias = torch.zeros(q_len, kv_len, dtype=dtype, device=device)
    if mask is not None:
        pad = kv_len - mask.shape[-1]
        if pad > 0:
            fill = False if mask.dtype == torch.bool else -math.inf
            mask = F.pad(mask, (0, pad), value=fill)
        if mask.dtype == torch.bool:
            mask = torch.where(mask, zero, neg)
        bias = bias + mask.to(dtype)
    i = torch.arange(q_len, device=device).reshape(q_len, 1)
    j = torch.arange(kv_len, device=device).reshape(1, kv_len)
    if isinstance(offset, torch.Tensor):
        i = i + offset.reshape(-1, 1, 1, 1).to(i.dtype)  # (batch, 1, q, 1)
    else:
        i = i + offset
    if is_causal:
        bias = bias + torch.where(j <= i, zero, neg)
    if left >= 0 or right >= 0:
        allowed = torch.ones_like(j <= i)
        if left >= 0:
            allowed = allowed & (i - j <= left)
        if right >= 0:
            allowed = allowed & (j - i <= right)
        bias = bias + torch.where(allowed, zero, neg)
    if nonpad is not None:
        valid = j < nonpad.reshape(-1, 1).to(j.dtype)  # (batch, kv)
        bias = bias + torch.where(valid, zero, neg).reshape(-1, 1, 1, kv_len)
    return bias


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: torch.Tensor | None = None, past_key: torch.Tensor | None = None,
              past_value: torch.Tensor | None = None, nonpad_kv_seqlen: torch.Tensor | None = None,
              scale: float | None = None, is_causal: int = 0, q_num_heads: int = 0,
              kv_num_heads: int = 0, softmax_dtype: torch.dtype | None = None,
              softcap: float = 0.0, qk_mode: int = 0, left_window: int = -1,
              right_window: int = -1) -> tuple[torch.Tensor, ...]:
    """ONNX Attention: (Y, present_key, present_value, qk_matmul_output)."""
    three_d = q.dim() == 3
    if three_d:
        q, k, v = to_heads(q, q_num_heads), to_heads(k, kv_num_heads), to_heads(v, kv_num_heads)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[3])
    s = torch.tensor(math.sqrt(scale), dtype=q.dtype)
    if past_key is not None:
        k = torch.cat((past_key, k), dim=2)
    if past_value is not None:
        v = torch.cat((past_value, v), dim=2)
    present_key, present_value = k, v
    q_len, kv_len = q.shape[2], k.shape[2]
    if past_key is not None:
        offset = past_key.shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = nonpad_kv_seqlen.reshape(-1) - q_len
    else:
        offset = 0
    bias = attention_bias(q_len, kv_len, q.dtype, q.device, attn_mask, offset, bool(is_causal),
                          left_window, right_window, nonpad_kv_seqlen)
    if q.shape[1] != k.shape[1] and q.shape[1] % k.shape[1] == 0:
        reps = q.shape[1] // k.shape[1]
        k = torch.repeat_interleave(k, reps, dim=1)
        v = torch.repeat_interleave(v, reps, dim=1)
    qk = torch.matmul(q * s, k.transpose(2, 3) * s)
    if softcap > 0:
        qk = torch.tanh(qk / softcap) * softcap
    scores = qk + bias
    if qk_mode == 2:
        qk = scores
    if softmax_dtype is not None:
        scores = scores.to(softmax_dtype)
    probs = masked_softmax(scores)
    dead = torch.isneginf(bias.amax(dim=-1, keepdim=True))
    probs = torch.where(dead, torch.zeros_like(probs), probs)
    if qk_mode == 3:
        qk = probs
    y = torch.matmul(probs.to(q.dtype), v)
    if three_d:
        y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
    return y, present_key, present_value, qk.to(q.dtype)


@converter("Attention", since=(23, 24, 25))
def _attention(node: Node, ctx: Context) -> Op:
    prec = node.attr("softmax_precision")
    kw = {"scale": node.attr("scale"), "is_causal": node.attr("is_causal", 0),
          "q_num_heads": node.attr("q_num_heads", 0), "kv_num_heads": node.attr("kv_num_heads", 0),
          "softmax_dtype": _FLOAT_TYPES[prec] if prec is not None else None,
          "softcap": node.attr("softcap", 0.0), "qk_mode": node.attr("qk_matmul_output_mode", 0),
          "left_window": node.attr("left_window_size", -1),
          "right_window": node.attr("right_window_size", -1)}
    args = tuple(In(i) if ctx.has(i) else None for i in range(7))
    return Op(attention, args, kw, n_out=4)


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     position_ids: torch.Tensor | None = None, interleaved: int = 0,
                     rotary_dim: int = 0, num_heads: int = 0) -> torch.Tensor:
    """ONNX RotaryEmbedding on (batch, heads, seq, size) or (batch, seq, heads * size)."""
    shape = x.shape
    if x.dim() == 4:
        x = x.transpose(1, 2)
    else:
        x = x.reshape(shape[0], shape[1], num_heads, -1)
    dim = rotary_dim or x.shape[3]
    rot, keep = x[..., :dim], x[..., dim:]
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    else:
        x1, x2 = rot[..., :dim // 2], rot[..., dim // 2:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        rot = torch.stack((real, imag), dim=-1).reshape(rot.shape)
    else:
        rot = torch.cat((real, imag), dim=-1)
    y = torch.cat((rot, keep), dim=-1)
    return y.transpose(1, 2) if len(shape) == 4 else y.reshape(shape)


@converter("RotaryEmbedding", since=(23,))
def _rotary_embedding(node: Node, ctx: Context) -> Op:
    return Op(rotary_embedding, (In(0), In(1), In(2), In(3) if ctx.has(3) else None),
              {"interleaved": node.attr("interleaved", 0),
               "rotary_dim": node.attr("rotary_embedding_dim", 0),
               "num_heads": node.attr("num_heads", 0)})


def swiglu(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """SwiGLU: a * sigmoid(alpha * a) * b."""
    return a * torch.sigmoid(alpha * a) * b


@converter("SwiGLU", since=(28,))
def _swiglu(node: Node, ctx: Context) -> Op:
    return Op(swiglu, (In(0), In(1)), {"alpha": node.attr("alpha", 1.0)})


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     past_state: torch.Tensor | None = None, decay: torch.Tensor | None = None,
                     beta: torch.Tensor | None = None, q_num_heads: int = 1,
                     kv_num_heads: int = 1, scale: float = 0.0,
                     update_rule: str = "gated_delta") -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX LinearAttention: the token-by-token recurrence, computed in float32."""
    b, t, _ = q.shape
    out_dtype = q.dtype
    q4 = to_heads(q, q_num_heads).float()
    k4 = to_heads(k, kv_num_heads).float()
    v4 = to_heads(v, kv_num_heads).float()
    d_k, d_v = q4.shape[3], v4.shape[3]
    group = q_num_heads // kv_num_heads
    if decay is not None:
        if decay.shape[-1] == kv_num_heads:
            decay = decay.reshape(b, t, kv_num_heads, 1).transpose(1, 2)
        else:
            decay = to_heads(decay, kv_num_heads)
        decay = decay.float()
    if beta is not None:
        beta = beta.reshape(b, t, beta.shape[-1], 1).transpose(1, 2).float()
    if past_state is not None:
        state_dtype, state = past_state.dtype, past_state.float()
    else:
        state_dtype = out_dtype
        state = torch.zeros(b, kv_num_heads, d_k, d_v, dtype=torch.float32, device=q.device)
    scale = scale or 1.0 / math.sqrt(d_k)
    outs = []
    for i in range(t):
        k_t, v_t = k4[:, :, i], v4[:, :, i]
        if decay is not None and update_rule in ("gated", "gated_delta"):
            state = state * torch.exp(decay[:, :, i]).unsqueeze(-1)
        if beta is not None and update_rule in ("delta", "gated_delta"):
            retrieved = torch.einsum("bhdm,bhd->bhm", state, k_t)
            v_t = beta[:, :, i] * (v_t - retrieved)
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        read = state if group == 1 else torch.repeat_interleave(state, group, dim=1)
        outs.append(scale * torch.einsum("bhd,bhdm->bhm", q4[:, :, i], read))
    y = torch.stack(outs, dim=2).transpose(1, 2).reshape(b, t, q_num_heads * d_v)
    return y.to(out_dtype), state.to(state_dtype)


@converter("LinearAttention", since=(27,))
def _linear_attention(node: Node, ctx: Context) -> Op:
    args = tuple(In(i) if ctx.has(i) else None for i in range(6))
    return Op(linear_attention, args,
              {"q_num_heads": node.attr("q_num_heads"), "kv_num_heads": node.attr("kv_num_heads"),
               "scale": node.attr("scale", 0.0),
               "update_rule": node.attr("update_rule", "gated_delta")}, n_out=2)


def causal_conv_with_state(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                           past_state: torch.Tensor | None = None,
                           activation: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv1d over (batch, channels, length), left-padded by the carried state."""
    k = weight.shape[2]
    if past_state is None:
        past_state = torch.zeros(x.shape[0], x.shape[1], k - 1, dtype=x.dtype, device=x.device)
    padded = torch.cat((past_state, x), dim=2)
    y = F.conv1d(padded.float(), weight.float(), None if bias is None else bias.float(),
                 groups=x.shape[1])
    if activation in ("silu", "swish"):
        y = F.silu(y.to(x.dtype).float())
    return y.to(x.dtype), padded[:, :, padded.shape[2] - (k - 1):]


@converter("CausalConvWithState", since=(27,))
def _causal_conv_with_state(node: Node, ctx: Context) -> Op:
    args = tuple(In(i) if ctx.has(i) else None for i in range(4))
    return Op(causal_conv_with_state, args, {"activation": node.attr("activation", "none")},
              n_out=2)


def tensor_scatter(cache: torch.Tensor, update: torch.Tensor,
                   write_indices: torch.Tensor | None = None, circular: bool = False,
                   axis: int = -2) -> torch.Tensor:
    """Write ``update`` into ``cache`` along ``axis`` at per-batch offsets ``write_indices``."""
    axis = axis % cache.dim()
    b, s = update.shape[0], update.shape[axis]
    if write_indices is None:
        write_indices = torch.zeros(b, dtype=torch.int64, device=cache.device)
    pos = write_indices.reshape(b, 1).to(torch.int64) + torch.arange(s, device=cache.device)
    if circular:
        pos = pos % cache.shape[axis]
    view = [b] + [1] * (cache.dim() - 1)
    view[axis] = s
    return cache.scatter(axis, pos.reshape(view).expand(update.shape), update)


@converter("TensorScatter", since=(24,))
def _tensor_scatter(node: Node, ctx: Context) -> Op:
    return Op(tensor_scatter, (In(0), In(1), In(2) if ctx.has(2) else None),
              {"circular": node.attr("mode", "linear") == "circular",
               "axis": node.attr("axis", -2)})


class FlexAttention(nn.Module):
    """ai.onnx.preview FlexAttention: attention whose scores / probabilities pass through the
    node's ``score_mod`` / ``prob_mod`` subgraphs (sub-plans fed with the outer values they read).
    """

    source_unsupported = True

    def __init__(self, score_mod: nn.Module | None, prob_mod: nn.Module | None,
                 scale: float | None, softmax_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.score_mod, self.prob_mod = score_mod, prob_mod
        self.scale, self.softmax_dtype = scale, softmax_dtype

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                *outer: torch.Tensor) -> torch.Tensor:
        if q.shape[1] != k.shape[1]:
            reps = q.shape[1] // k.shape[1]
            k = torch.repeat_interleave(k, reps, dim=1)
            v = torch.repeat_interleave(v, reps, dim=1)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[3])
        s = torch.sqrt(torch.tensor(scale, dtype=torch.float32)).to(q.dtype)
        dtype = self.softmax_dtype or (q.dtype if q.dtype == torch.float64 else torch.float32)
        scores = torch.matmul(q * s, (k * s).transpose(-1, -2)).to(dtype)
        if self.score_mod is not None:
            scores = self.score_mod([scores], outer)[0].to(dtype)
        probs = torch.softmax(scores, dim=-1)
        if self.prob_mod is not None:
            probs = self.prob_mod([probs], outer)[0].to(dtype)
        return torch.matmul(probs, v.to(dtype)).to(v.dtype)


@converter("FlexAttention", since=(1,), domain="ai.onnx.preview")
def _flex_attention(node: Node, ctx: Context) -> Op:
    from porter.converters.ops.control import _bodies

    names = [n for n in ("score_mod", "prob_mod") if node.attr(n) is not None]
    mods, outer = _bodies(node, ctx, [node.attr(n) for n in names])
    by_name = dict(zip(names, mods))
    prec = node.attr("softmax_precision")
    flex = FlexAttention(by_name.get("score_mod"), by_name.get("prob_mod"), node.attr("scale"),
                         _FLOAT_TYPES[prec] if prec is not None else None)
    return Op(flex, (In(0), In(1), In(2), *outer))
