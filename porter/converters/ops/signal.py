"""Signal processing: DFT, STFT, Hann/Hamming/Blackman windows, MelWeightMatrix.

ONNX keeps complex values as a trailing dimension of 2 (real, imaginary); a real signal may
instead end in a dimension of 1.
"""

from __future__ import annotations

import math

import torch

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter


def _dtype(elem_type: int) -> torch.dtype:
    """The torch dtype of an ONNX element type (window / mel ``output_datatype``)."""
    import numpy as np
    from onnx import helper

    return torch.from_numpy(np.empty(0, helper.tensor_dtype_to_np_dtype(elem_type))).dtype


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """[..., 1] real or [..., 2] (re, im) -> complex128 [...] (double precision, as the spec's
    reference computes it)."""
    x = x.to(torch.float64)
    if x.shape[-1] == 1:
        return x[..., 0].to(torch.complex128)
    return torch.complex(x[..., 0], x[..., 1])


def dft(x: torch.Tensor, dft_length: torch.Tensor | int | None = None,
        axis: torch.Tensor | int = 1, inverse: int = 0, onesided: int = 0) -> torch.Tensor:
    """ONNX DFT along ``axis`` (counted with the trailing complex dimension)."""
    axis = int(axis) % x.dim()
    n = None if dft_length is None else int(dft_length)
    if inverse:
        if onesided:
            if n is None:
                n = 2 * (x.shape[axis] - 1)
            return torch.fft.irfft(_as_complex(x), n=n, dim=axis).unsqueeze(-1).to(x.dtype)
        y = torch.fft.ifft(_as_complex(x), n=n, dim=axis)
    else:
        y = torch.fft.fft(_as_complex(x), n=n, dim=axis)
        if onesided:
            y = y.narrow(axis, 0, y.shape[axis] // 2 + 1)
    return torch.stack([y.real, y.imag], -1).to(x.dtype)


@converter("DFT", since=(17, 20))
def _dft(node: Node, ctx: Context) -> Op:
    length = In(1) if ctx.has(1) else None
    if node.opset >= 20:
        axis = In(2) if ctx.has(2) else -2
    else:
        axis = node.attr("axis", 1)
    return Op(dft, (In(0), length, axis, node.attr("inverse", 0), node.attr("onesided", 0)))


def stft(x: torch.Tensor, frame_step: torch.Tensor, window: torch.Tensor | None = None,
         frame_length: torch.Tensor | None = None, onesided: int = 1) -> torch.Tensor:
    """[batch, frames, bins, 2] short-time Fourier transform of a [batch, length, 1|2] signal."""
    step = int(frame_step)
    if frame_length is not None:
        size = int(frame_length)
    else:
        size = window.shape[0] if window is not None else x.shape[-2]
    frames = _as_complex(x).unfold(-1, size, step)  # [batch, n_frames, size]
    if window is not None:
        frames = frames * window.to(torch.float64)
    y = torch.fft.fft(frames, dim=-1)
    if onesided:
        y = y[..., : size // 2 + 1]
    return torch.stack([y.real, y.imag], -1).to(x.dtype)


@converter("STFT", since=(17,))
def _stft(node: Node, ctx: Context) -> Op:
    return Op(stft, (In(0), In(1), In(2) if ctx.has(2) else None, In(3) if ctx.has(3) else None,
                     node.attr("onesided", 1)))


def window(size: torch.Tensor, kind: str = "hann", periodic: int = 1,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Hann / Hamming / Blackman window of ``size`` samples (symmetric when not periodic)."""
    count = int(size)
    denom = count if periodic else count - 1
    t = torch.arange(count, dtype=torch.float64) * (2 * math.pi / denom)
    if kind == "hann":
        w = 0.5 - 0.5 * torch.cos(t)
    elif kind == "hamming":
        w = 25.0 / 46.0 - (21.0 / 46.0) * torch.cos(t)
    else:
        w = 0.42 - 0.5 * torch.cos(t) + 0.08 * torch.cos(2 * t)
    return w.to(dtype)


def _window(kind: str):
    def convert(node: Node, ctx: Context) -> Op:
        return Op(window, (In(0), kind, node.attr("periodic", 1),
                           _dtype(node.attr("output_datatype", 1))))

    return convert


converter("HannWindow", since=(17,))(_window("hann"))
converter("HammingWindow", since=(17,))(_window("hamming"))
converter("BlackmanWindow", since=(17,))(_window("blackman"))


def mel_weight_matrix(num_mel_bins: torch.Tensor, dft_length: torch.Tensor,
                      sample_rate: torch.Tensor, lower_hz: torch.Tensor, upper_hz: torch.Tensor,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[dft_length // 2 + 1, num_mel_bins] triangular filters evenly spaced on the mel scale."""
    n_mel, n_dft, rate = int(num_mel_bins), int(dft_length), int(sample_rate)
    lo = 2595 * math.log10(1 + float(lower_hz) / 700)
    hi = 2595 * math.log10(1 + float(upper_hz) / 700)
    step = (hi - lo) / (n_mel + 2)
    mel = torch.arange(n_mel + 2, dtype=torch.float64) * step + lo
    hz = 700 * torch.expm1(mel / 2595 * math.log(10))
    bins = torch.floor((n_dft + 1) * hz / rate).to(torch.int64).tolist()
    out = torch.zeros(n_dft // 2 + 1, n_mel, dtype=torch.float64)
    for i in range(n_mel):
        left, center, right = bins[i], bins[i + 1], bins[i + 2]
        if center == left:
            out[center, i] = 1.0
        else:
            for j in range(left, center + 1):
                out[j, i] = (j - left) / (center - left)
        for j in range(center, right):
            out[j, i] = (right - j) / (right - center)
    return out.to(dtype)


@converter("MelWeightMatrix", since=(17,))
def _mel(node: Node, ctx: Context) -> Op:
    return Op(mel_weight_matrix, tuple(In(i) for i in range(5)),
              {"dtype": _dtype(node.attr("output_datatype", 1))})
