"""Training ops: the losses NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, and the
optimizer steps Adam, Adagrad and Momentum of domain ``ai.onnx.preview.training``.

The losses follow the ONNX spec rather than ``F.nll_loss``: targets equal to ``ignore_index`` may lie
outside ``[0, C)`` (even negative), and a weighted (or ignoring) mean divides by the sum of the
weights of the targets that were not ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter


def nll_loss(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             reduction: str = "mean", ignore_index: int | None = None) -> torch.Tensor:
    """ONNX NegativeLogLikelihoodLoss on ``x`` [N, C, d1, …] and ``target`` [N, d1, …]."""
    target = target.long()
    keep = (target != ignore_index if ignore_index is not None
            else torch.ones_like(target, dtype=torch.bool))
    safe = torch.where(keep, target, torch.zeros_like(target))
    picked = torch.gather(x, 1, safe.unsqueeze(1)).squeeze(1)
    loss = torch.where(keep, -picked, torch.zeros_like(picked))
    w = None
    if weight is not None:
        w = weight[safe.clamp(0, weight.shape[0] - 1)] * keep.to(x.dtype)
    elif ignore_index is not None:
        w = keep.to(x.dtype)
    if w is not None:
        loss = loss * w
        if reduction == "mean":
            return (loss.sum() / w.sum()).to(x.dtype)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def softmax_cross_entropy(x: torch.Tensor, target: torch.Tensor,
                          weight: torch.Tensor | None = None, reduction: str = "mean",
                          ignore_index: int | None = None,
                          log_prob: bool = False):
    """ONNX SoftmaxCrossEntropyLoss: log-softmax over axis 1, then the NLL loss."""
    lp = F.log_softmax(x, dim=1)
    loss = nll_loss(lp, target, weight, reduction, ignore_index)
    return (loss, lp) if log_prob else loss


def _loss_kwargs(node: Node) -> dict:
    return {"reduction": node.attr("reduction", "mean"), "ignore_index": node.attr("ignore_index")}


@converter("NegativeLogLikelihoodLoss", since=(12, 13, 22))
def _nll_loss(node: Node, ctx: Context) -> Op:
    return Op(nll_loss, (In(0), In(1), In(2) if ctx.has(2) else None), _loss_kwargs(node))


@converter("SoftmaxCrossEntropyLoss", since=(12, 13))
def _softmax_cross_entropy(node: Node, ctx: Context) -> Op:
    two = len(node.outputs) > 1 and bool(node.outputs[1])
    return Op(softmax_cross_entropy, (In(0), In(1), In(2) if ctx.has(2) else None),
              {**_loss_kwargs(node), "log_prob": two}, n_out=2 if two else 1)


TRAINING = "ai.onnx.preview.training"


def adam(r: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor, alpha: float = 0.9,
         beta: float = 0.999, epsilon: float = 1e-6, norm_coefficient: float = 0.0,
         norm_coefficient_post: float = 0.0) -> tuple[torch.Tensor, ...]:
    """One Adam step for n tensors given as X1..Xn, G1..Gn, V1..Vn, H1..Hn.

    Returns X_new1..n, V_new1..n, H_new1..n. From the second step on (``t > 0``) the rate
    carries the bias correction ``sqrt(1 - beta^t) / (1 - alpha^t)``.
    """
    n = len(tensors) // 4
    tf = t.to(torch.float64)
    corrected = r.to(torch.float64) * torch.sqrt(1 - beta ** tf) / (1 - alpha ** tf)
    rate = torch.where(t > 0, corrected, r.to(torch.float64))
    xs, vs, hs = [], [], []
    for x, g, v, h in zip(*(tensors[k * n:(k + 1) * n] for k in range(4))):
        g = norm_coefficient * x + g
        v_new = alpha * v + (1 - alpha) * g
        h_new = beta * h + (1 - beta) * g * g
        x_new = x - (rate * (v_new / (torch.sqrt(h_new) + epsilon))).to(x.dtype)
        xs.append((1 - norm_coefficient_post) * x_new)
        vs.append(v_new)
        hs.append(h_new)
    return tuple(xs + vs + hs)


def adagrad(r: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor, decay_factor: float = 0.0,
            epsilon: float = 1e-6, norm_coefficient: float = 0.0) -> tuple[torch.Tensor, ...]:
    """One Adagrad step for X1..Xn, G1..Gn, H1..Hn; returns X_new1..n, H_new1..n."""
    n = len(tensors) // 3
    rate = r / (1 + t.to(r.dtype) * decay_factor)
    xs, hs = [], []
    for x, g, h in zip(*(tensors[k * n:(k + 1) * n] for k in range(3))):
        g = norm_coefficient * x + g
        h_new = h + g * g
        xs.append((x - rate * g / (torch.sqrt(h_new) + epsilon)).to(x.dtype))
        hs.append(h_new.to(h.dtype))
    return tuple(xs + hs)


def momentum(r: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor, alpha: float = 0.9,
             beta: float = 1.0, mode: str = "standard",
             norm_coefficient: float = 0.0) -> tuple[torch.Tensor, ...]:
    """One SG-with-momentum (or Nesterov) step for X1..Xn, G1..Gn, V1..Vn.

    Returns X_new1..n, V_new1..n; the gradient's coefficient is 1 on the first step (t = 0).
    """
    n = len(tensors) // 3
    beta_t = torch.where(t > 0, torch.full_like(r, beta), torch.ones_like(r))
    xs, vs = [], []
    for x, g, v in zip(*(tensors[k * n:(k + 1) * n] for k in range(3))):
        g = norm_coefficient * x + g
        v_new = alpha * v + beta_t * g
        step = g + alpha * v_new if mode == "nesterov" else v_new
        xs.append((x - r * step).to(x.dtype))
        vs.append(v_new.to(v.dtype))
    return tuple(xs + vs)


def _optimizer(fn, node: Node, n_state: int, attrs: dict) -> Op:
    n_in = len(node.inputs) - 2
    kw = {k: node.attr(k, d) for k, d in attrs.items()}
    return Op(fn, tuple(In(i) for i in range(n_in + 2)), kw, n_out=n_in // n_state * (n_state - 1))


@converter("Adam", since=(1,), domain=TRAINING)
def _adam(node: Node, ctx: Context) -> Op:
    return _optimizer(adam, node, 4, {"alpha": 0.9, "beta": 0.999, "epsilon": 1e-6,
                                      "norm_coefficient": 0.0, "norm_coefficient_post": 0.0})


@converter("Adagrad", since=(1,), domain=TRAINING)
def _adagrad(node: Node, ctx: Context) -> Op:
    return _optimizer(adagrad, node, 3, {"decay_factor": 0.0, "epsilon": 1e-6,
                                         "norm_coefficient": 0.0})


@converter("Momentum", since=(1,), domain=TRAINING)
def _momentum(node: Node, ctx: Context) -> Op:
    return _optimizer(momentum, node, 3, {"alpha": 0.9, "beta": 1.0, "mode": "standard",
                                          "norm_coefficient": 0.0})
