"""Paddle reference for BackgroundMattingV2: the network in paddle.nn with the published names.

A re-implementation of the Paddle reproduction's (zackzhao1/BackgroundMattingV2-paddle)
ResNet-50/101 MattingBase and MattingRefine, with the same state-dict names
(``backbone.layer1.0.bn1._mean`` …), but computing the intended maths where the reproduction is
broken under Paddle 3.x: patch crops gather pixels directly (no internal roi_align op, no
hard-coded box count), thresholding uses ``err > t``, patch replacement writes through no view,
and ``prevent_oversampling`` really drops zero-error cells.

Used three ways:
- ``python scripts/bgmv2_paddle_ref.py build OUT.pdparams --cls MattingRefine --backbone resnet50``
  writes random weights (seeded numpy, random BatchNorm statistics) with ``paddle.save``;
- ``python scripts/bgmv2_paddle_ref.py run W.pdparams IN.npz OUT.npz --cls …`` runs it;
- ``runner(payload)`` is a factory for :class:`porter.verification.runtimes.child.ChildRuntime`.

Never import this module in a process that has imported TensorFlow (the two segfault together).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BASE_OUTPUTS = ("pha", "fgr", "err", "hid")
REFINE_OUTPUTS = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")


def _bn(c: int) -> nn.BatchNorm2D:
    return nn.BatchNorm2D(c, momentum=0.9, epsilon=1e-5)


def _bilinear(x: paddle.Tensor, size: tuple[int, int]) -> paddle.Tensor:
    return F.interpolate(x, size=list(size), mode="bilinear", align_corners=False, align_mode=0)


def _nearest(x: paddle.Tensor, size: tuple[int, int]) -> paddle.Tensor:
    return F.interpolate(x, size=list(size), mode="nearest")


class Bottleneck(nn.Layer):
    def __init__(self, cin: int, planes: int, stride: int, dilation: int,
                 downsample: nn.Layer | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(cin, planes, 1, bias_attr=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2D(planes, planes, 3, stride, dilation, dilation, bias_attr=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2D(planes, planes * 4, 1, bias_attr=False)
        self.bn3 = _bn(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetEncoder(nn.Layer):
    def __init__(self, cin: int, variant: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(cin, 64, 7, 2, 3, bias_attr=False)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(3, 2, 1)
        blocks = BLOCKS[variant]
        specs = ((64, blocks[0], 1, 1, 1), (128, blocks[1], 2, 1, 1),
                 (256, blocks[2], 2, 1, 1), (512, blocks[3], 1, 1, 2))  # layer4: dilation 2
        c = 64
        for i, (planes, n, stride, d_first, d_rest) in enumerate(specs, start=1):
            down = None
            if stride != 1 or c != planes * 4:
                down = nn.Sequential(nn.Conv2D(c, planes * 4, 1, stride, bias_attr=False),
                                     _bn(planes * 4))
            layers = [Bottleneck(c, planes, stride, d_first, down)]
            c = planes * 4
            layers += [Bottleneck(c, planes, 1, d_rest, None) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))

    def forward(self, x):
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x1))
        x3 = self.layer2(x2)
        x4 = self.layer4(self.layer3(x3))
        return x4, x3, x2, x1, x


class ASPPPooling(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2D(1), nn.Conv2D(cin, cout, 1, bias_attr=False),
                         _bn(cout), nn.ReLU())

    def forward(self, x):
        size = x.shape[-2:]
        return _bilinear(super().forward(x), size)


class ASPP(nn.Layer):
    def __init__(self, cin: int, rates=(3, 6, 9), cout: int = 256) -> None:
        super().__init__()
        mods = [nn.Sequential(nn.Conv2D(cin, cout, 1, bias_attr=False), _bn(cout), nn.ReLU())]
        mods += [nn.Sequential(nn.Conv2D(cin, cout, 3, padding=r, dilation=r, bias_attr=False),
                               _bn(cout), nn.ReLU()) for r in rates]
        mods.append(ASPPPooling(cin, cout))
        self.convs = nn.LayerList(mods)
        self.project = nn.Sequential(nn.Conv2D(5 * cout, cout, 1, bias_attr=False), _bn(cout),
                                     nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(paddle.concat([m(x) for m in self.convs], axis=1))


class Decoder(nn.Layer):
    def __init__(self, ch, skip) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(skip[0] + ch[0], ch[1], 3, padding=1, bias_attr=False)
        self.bn1 = _bn(ch[1])
        self.conv2 = nn.Conv2D(skip[1] + ch[1], ch[2], 3, padding=1, bias_attr=False)
        self.bn2 = _bn(ch[2])
        self.conv3 = nn.Conv2D(skip[2] + ch[2], ch[3], 3, padding=1, bias_attr=False)
        self.bn3 = _bn(ch[3])
        self.conv4 = nn.Conv2D(skip[3] + ch[3], ch[4], 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x4, x3, x2, x1, x0):
        x = paddle.concat([_bilinear(x4, x3.shape[2:]), x3], axis=1)
        x = self.relu(self.bn1(self.conv1(x)))
        x = paddle.concat([_bilinear(x, x2.shape[2:]), x2], axis=1)
        x = self.relu(self.bn2(self.conv2(x)))
        x = paddle.concat([_bilinear(x, x1.shape[2:]), x1], axis=1)
        x = self.relu(self.bn3(self.conv3(x)))
        x = paddle.concat([_bilinear(x, x0.shape[2:]), x0], axis=1)
        return self.conv4(x)


def _crop(x, idx, size: int, pad: int):
    """[N, C, k, k] windows (k = size + 2 pad) at grid cells idx [N, 3] = (b, row, col)."""
    if pad:
        x = F.pad(x, [pad] * 4)
    k = size + 2 * pad
    n = idx.shape[0]
    ar = paddle.arange(k, dtype="int64")
    b = paddle.expand(idx[:, 0].reshape([n, 1, 1]), [n, k, k])
    r = paddle.expand((idx[:, 1] * size).reshape([n, 1, 1]) + ar.reshape([1, k, 1]), [n, k, k])
    c = paddle.expand((idx[:, 2] * size).reshape([n, 1, 1]) + ar.reshape([1, 1, k]), [n, k, k])
    pix = paddle.gather_nd(x.transpose([0, 2, 3, 1]), paddle.stack([b, r, c], axis=-1))
    return pix.transpose([0, 3, 1, 2])  # [N, k, k, C] -> [N, C, k, k]


def _replace(x, patches, idx, ref):
    """``x`` with the 4x4 cells at ``idx`` set to ``patches`` [N, C, 4, 4]."""
    bsz, ch, h, w = x.shape
    n = idx.shape[0]
    ar = paddle.arange(4, dtype="int64")
    b = paddle.expand(idx[:, 0].reshape([n, 1, 1]), [n, 4, 4])
    r = paddle.expand((idx[:, 1] * 4).reshape([n, 1, 1]) + ar.reshape([1, 4, 1]), [n, 4, 4])
    c = paddle.expand((idx[:, 2] * 4).reshape([n, 1, 1]) + ar.reshape([1, 1, 4]), [n, 4, 4])
    new = paddle.scatter_nd(paddle.stack([b, r, c], axis=-1), patches.transpose([0, 2, 3, 1]),
                            [bsz, h, w, ch]).transpose([0, 3, 1, 2])
    mask = _nearest(ref, (h, w))
    return x * (1.0 - mask) + new


class Refiner(nn.Layer):
    def __init__(self, mode, sample_pixels, threshold, kernel_size, prevent_oversampling):
        super().__init__()
        self.mode, self.sample_pixels, self.threshold = mode, sample_pixels, threshold
        self.kernel_size, self.prevent_oversampling = kernel_size, prevent_oversampling
        k = kernel_size
        self.conv1 = nn.Conv2D(42, 24, k, bias_attr=False)
        self.bn1 = _bn(24)
        self.conv2 = nn.Conv2D(24, 16, k, bias_attr=False)
        self.bn2 = _bn(16)
        self.conv3 = nn.Conv2D(22, 12, k, bias_attr=False)
        self.bn3 = _bn(12)
        self.conv4 = nn.Conv2D(12, 4, k)
        self.relu = nn.ReLU()

    def _select(self, err):
        if self.mode == "thresholding":
            return (err > self.threshold).astype(err.dtype)
        b, _, h, w = err.shape
        flat = err.reshape([b, -1])
        k = min(self.sample_pixels // 16, h * w)
        top = paddle.topk(flat, k, axis=1, sorted=False)[1]
        ref = paddle.put_along_axis(paddle.zeros_like(flat), top,
                                    paddle.ones_like(top, dtype=flat.dtype), axis=1)
        if self.prevent_oversampling:
            ref = ref * (flat > 0).astype(flat.dtype)
        return ref.reshape([b, 1, h, w])

    def _stage1(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))

    def _stage2(self, x):
        return self.conv4(self.relu(self.bn3(self.conv3(x))))

    def forward(self, src, bgr, pha, fgr, err, hid):
        h, w = src.shape[2:]
        half, quarter = (h // 2, w // 2), (h // 4, w // 4)
        src_bgr = paddle.concat([src, bgr], axis=1)
        coarse = paddle.concat([hid, pha, fgr], axis=1)
        three = self.kernel_size == 3
        if self.mode == "full":
            x, y = _bilinear(coarse, half), _bilinear(src_bgr, half)
            if three:
                x, y = F.pad(x, [3] * 4), F.pad(y, [3] * 4)
            x = self._stage1(paddle.concat([x, y], axis=1))
            if three:
                x, y = _nearest(x, (h + 4, w + 4)), F.pad(src_bgr, [2] * 4)
            else:
                x, y = _nearest(x, (h, w)), src_bgr
            out = self._stage2(paddle.concat([x, y], axis=1))
            return out[:, :1], out[:, 1:], paddle.ones([src.shape[0], 1, *quarter], src.dtype)
        ref = self._select(_bilinear(err, quarter))
        out = _bilinear(paddle.concat([pha, fgr], axis=1), (h, w))
        idx = paddle.nonzero(ref[:, 0])
        if idx.shape[0] > 0:
            x = _crop(_bilinear(coarse, half), idx, 2, 3 if three else 0)
            y = _crop(_bilinear(src_bgr, half), idx, 2, 3 if three else 0)
            x = self._stage1(paddle.concat([x, y], axis=1))
            x = _nearest(x, (8, 8) if three else (4, 4))
            y = _crop(src_bgr, idx, 4, 2 if three else 0)
            out = _replace(out, self._stage2(paddle.concat([x, y], axis=1)), idx, ref)
        return out[:, :1], out[:, 1:], ref


class MattingBase(nn.Layer):
    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        if backbone not in BLOCKS:
            raise ValueError(f"Paddle reference builds ResNet-50/101 only, not {backbone!r}")
        self.backbone = ResNetEncoder(6, backbone)
        self.aspp = ASPP(2048)
        self.decoder = Decoder((256, 128, 64, 48, 37), (512, 256, 64, 6))

    def _coarse(self, src, bgr):
        x, *skips = self.backbone(paddle.concat([src, bgr], axis=1))
        return self.decoder(self.aspp(x), *skips)

    def forward(self, src, bgr):
        x = self._coarse(src, bgr)
        return (x[:, 0:1].clip(0.0, 1.0), (x[:, 1:4] + src).clip(0.0, 1.0),
                x[:, 4:5].clip(0.0, 1.0), F.relu(x[:, 5:]))


class MattingRefine(MattingBase):
    def __init__(self, backbone: str = "resnet50", backbone_scale: float = 0.25,
                 refine_mode: str = "sampling", refine_sample_pixels: int = 80_000,
                 refine_threshold: float = 0.1, refine_kernel_size: int = 3,
                 refine_prevent_oversampling: bool = True) -> None:
        super().__init__(backbone)
        self.backbone_scale = backbone_scale
        self.refiner = Refiner(refine_mode, refine_sample_pixels, refine_threshold,
                               refine_kernel_size, refine_prevent_oversampling)

    def forward(self, src, bgr):
        h, w = src.shape[2:]
        small = (int(h * self.backbone_scale), int(w * self.backbone_scale))
        src_sm, bgr_sm = _bilinear(src, small), _bilinear(bgr, small)
        x = self._coarse(src_sm, bgr_sm)
        pha_sm, fgr_sm = x[:, 0:1].clip(0.0, 1.0), x[:, 1:4]
        err_sm, hid_sm = x[:, 4:5].clip(0.0, 1.0), F.relu(x[:, 5:])
        pha, fgr, ref_sm = self.refiner(src, bgr, pha_sm, fgr_sm, err_sm, hid_sm)
        return (pha.clip(0.0, 1.0), (fgr + src).clip(0.0, 1.0), pha_sm,
                (fgr_sm + src_sm).clip(0.0, 1.0), err_sm, ref_sm)


CLASSES = {"MattingBase": MattingBase, "MattingRefine": MattingRefine}


def random_state(layer: nn.Layer, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights by name: He-normal convs, random BN affine and statistics.

    Scaled so activations stay O(1) through the residual stacks and the decoder's 37 outputs
    land mostly inside (0, 1) (pha and err centred on 0.5), so clipping hides little.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in layer.state_dict().items():
        shape = tuple(t.shape)
        if name.endswith("._mean"):
            a = rng.normal(0.0, 0.1, shape)
        elif name.endswith("._variance"):
            a = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            gain = 0.25 if name.startswith(("decoder.conv4", "refiner.conv4")) else 1.0
            a = rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)
        elif name.endswith(".bias") and name.startswith(("decoder.conv4", "refiner.conv4")):
            a = rng.normal(0.0, 0.05, shape)
            if name.startswith("decoder"):
                a[0] += 0.5
                a[4] += 0.5
            else:
                a[0] += 0.5
        elif name.endswith(".weight"):  # BatchNorm scale; residual branches start small
            hi = 0.4 if ".bn3." in name or "downsample.1" in name else 1.0
            a = rng.uniform(0.5 * hi, hi, shape)
        else:
            a = rng.normal(0.0, 0.1, shape)
        out[name] = a.astype(np.float32)
    return out


def build_layer(cls: str, kwargs: Mapping[str, Any]) -> nn.Layer:
    return CLASSES[cls](**kwargs)


def save_random(path: str, cls: str, kwargs: Mapping[str, Any], seed: int = 0) -> list[str]:
    """Write a random-weight ``.pdparams`` with the published names; returns the names."""
    layer = build_layer(cls, kwargs)
    layer.set_state_dict({k: paddle.to_tensor(v) for k, v in random_state(layer, seed).items()})
    state = layer.state_dict()
    paddle.save(state, path)
    return list(state)


def load_layer(path: str, cls: str, kwargs: Mapping[str, Any]) -> nn.Layer:
    """Build ``cls(**kwargs)`` and load ``path`` strictly (no missing or unexpected names)."""
    layer = build_layer(cls, kwargs)
    state = paddle.load(path)
    want = set(layer.state_dict())
    if set(state) != want:
        raise KeyError(f"{path}: missing {sorted(want - set(state))[:5]}, "
                       f"unexpected {sorted(set(state) - want)[:5]}")
    layer.set_state_dict(state)
    layer.eval()
    return layer


def runner(payload: Mapping[str, Any]):
    """ChildRuntime factory: ``{"path", "cls", "kwargs"}`` -> runner over src/bgr arrays."""
    paddle.set_device("cpu")
    cls = payload["cls"]
    layer = load_layer(payload["path"], cls, payload.get("kwargs", {}))
    names = REFINE_OUTPUTS if cls == "MattingRefine" else BASE_OUTPUTS

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with paddle.no_grad():
            outs = layer(paddle.to_tensor(np.ascontiguousarray(inputs["src"], np.float32)),
                         paddle.to_tensor(np.ascontiguousarray(inputs["bgr"], np.float32)))
        return {n: o.numpy() for n, o in zip(names, outs)}

    run.info = {"paddle": paddle.__version__}
    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("build", "run"):
        p = sub.add_parser(cmd)
        p.add_argument("weights")
        if cmd == "run":
            p.add_argument("inputs", help=".npz with src and bgr")
            p.add_argument("outputs", help=".npz to write")
        p.add_argument("--cls", default="MattingBase", choices=sorted(CLASSES))
        p.add_argument("--backbone", default="resnet50", choices=sorted(BLOCKS))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--kernel-size", type=int, default=3)
        p.add_argument("--mode", default="sampling")
        p.add_argument("--sample-pixels", type=int, default=80_000)
        p.add_argument("--threshold", type=float, default=0.1)
        p.add_argument("--backbone-scale", type=float, default=0.25)
    args = ap.parse_args(argv)
    kwargs: dict[str, Any] = {"backbone": args.backbone}
    if args.cls == "MattingRefine":
        kwargs.update(backbone_scale=args.backbone_scale, refine_mode=args.mode,
                      refine_sample_pixels=args.sample_pixels,
                      refine_threshold=args.threshold, refine_kernel_size=args.kernel_size)
    if args.cmd == "build":
        names = save_random(args.weights, args.cls, kwargs, args.seed)
        print(f"wrote {args.weights}: {len(names)} tensors")
    else:
        run = runner({"path": args.weights, "cls": args.cls, "kwargs": kwargs})
        np.savez(args.outputs, **run(dict(np.load(args.inputs))))


if __name__ == "__main__":
    main()
