"""Loss ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both follow the ONNX spec rather than ``F.nll_loss``: targets equal to ``ignore_index`` may lie
outside ``[0, C)`` (even negative), and a weighted (or ignoring) mean divides by the sum of the
weights of the targets that were not ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.convert.context import Context, In, Node, Op
from porter.convert.registry import converter


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
