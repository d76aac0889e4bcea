"""The papers' test protocols: which views of a validation image a net sees, and how its class
posteriors are combined.

Each protocol has two halves, split as the training transforms are (``cnnrepro.data.transforms``):

- a per-sample transform that runs in the loader workers on uint8 data and returns, per image,
  a ``K x 3 x H x W`` uint8 tensor of its K views (``dense``: a list of ``V x 3 x H_q x W_q``
  tensors, one per scale, since the scales differ in size);
- ``predict(model, x)``, run on the device by ``ClassifierModule``, which turns a batch of views
  into one ``B x classes`` tensor of class posteriors: the softmax averaged over the views (and
  for ``dense`` over the score map, the mirror and then the scales).

The stream under every protocol is an ``EvalStream``: each validation image is read exactly once,
by one worker of one rank, whatever the number of views it is expanded into.

| name | paper | views |
|---|---|---|
| ``center`` | (every paper's single-crop number) | shorter side to ``resize``, central ``crop`` |
| ``flip`` | (centre crop + its mirror) | 2 |
| ``tencrop`` | AlexNet Sec. 4.1, ZFNet Sec. 3, ResNet Sec. 3.4 ("standard 10-crop [AlexNet]") | 10 |
| ``dense`` | VGG Sec. 3.2 / 4.2, ResNet Sec. 3.4 (fully-convolutional, multi-scale) | map x 2 x scales |
| ``multicrop144`` | GoogLeNet Sec. 10 | 4 scales x 3 squares x 6 crops x 2 = 144 |
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnrepro.data.stream import EvalStream
from cnnrepro.errors import UserError
from cnnrepro.data.transforms import decode_rgb, resize_shorter, to_uint8_tensor

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "build_protocol",
    "ProtocolError",
    "CenterViews",
    "FlipViews",
    "TenCropViews",
    "MultiCrop144Views",
    "DenseViews",
    "average_views",
    "dense_posteriors",
]

PROTOCOLS = ("center", "flip", "tencrop", "dense", "multicrop144")


class ProtocolError(UserError, ValueError):
    """A protocol asked for something it cannot do; the message names the flag."""


def _mirror(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def _crop(img: Image.Image, x0: int, y0: int, size: int) -> Image.Image:
    return img.crop((x0, y0, x0 + size, y0 + size))


def five_crops(img: Image.Image, size: int) -> list[Image.Image]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``size`` squares of ``img``."""
    w, h = img.size
    if size > min(w, h):
        raise ProtocolError(f"crop {size} is larger than the {w}x{h} image it is cut from")
    return [
        _crop(img, 0, 0, size),
        _crop(img, w - size, 0, size),
        _crop(img, 0, h - size, size),
        _crop(img, w - size, h - size, size),
        _crop(img, (w - size) // 2, (h - size) // 2, size),
    ]


def _stack(imgs: list[Image.Image]) -> torch.Tensor:
    return torch.stack([to_uint8_tensor(i) for i in imgs])


class CenterViews:
    """One view: shorter side to ``resize``, the central ``crop`` x ``crop``."""

    def __init__(self, resize: int, crop: int):
        if crop > resize:
            raise ProtocolError(f"crop {crop} is larger than the resized shorter side {resize}")
        self.resize, self.crop = resize, crop

    def images(self, img: Image.Image) -> list[Image.Image]:
        img = resize_shorter(img, self.resize)
        w, h = img.size
        return [_crop(img, (w - self.crop) // 2, (h - self.crop) // 2, self.crop)]

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        return _stack(self.images(decode_rgb(data, self.resize)))


class FlipViews(CenterViews):
    """The centre crop and its horizontal mirror."""

    def images(self, img: Image.Image) -> list[Image.Image]:
        (c,) = super().images(img)
        return [c, _mirror(c)]


class TenCropViews(CenterViews):
    """AlexNet Sec. 2 + 4.1: shorter side to 256, the central 256x256 patch, then its four corner
    and centre ``crop`` patches and their horizontal reflections (ten views).

    ``square=True`` takes the corners of the central ``resize`` square, as AlexNet Sec. 2 and
    ZFNet Sec. 3 state; ResNet Sec. 3.4 cites AlexNet for its "standard 10-crop testing", so we
    read it the same way. ``square=False`` takes the corners of the whole resized image
    (torchvision's ``TenCrop``), for comparison with numbers measured that way.
    """

    def __init__(self, resize: int, crop: int, square: bool = True):
        super().__init__(resize, crop)
        self.square = square

    def images(self, img: Image.Image) -> list[Image.Image]:
        img = resize_shorter(img, self.resize)
        if self.square:
            w, h = img.size
            img = _crop(img, (w - self.resize) // 2, (h - self.resize) // 2, self.resize)
        crops = five_crops(img, self.crop)
        return crops + [_mirror(c) for c in crops]


class MultiCrop144Views:
    """GoogLeNet Sec. 10: "resize the image to 4 scales where the shorter dimension (height or
    width) is 256, 288, 320 and 352 respectively, take the left, center and right square of these
    resized images (in the case of portrait images, we take the top, center and bottom squares).
    For each square, we then take the 4 corners and the center 224x224 crop as well as the square
    resized to 224x224, and their mirrored versions." 4 x 3 x 6 x 2 = 144 views.

    A square image has three identical squares per scale; they are kept (the paper's count).
    """

    def __init__(self, scales: tuple[int, ...] = (256, 288, 320, 352), crop: int = 224):
        if min(scales) < crop:
            raise ProtocolError(f"--protocol_scales {list(scales)}: every scale must be >= the crop {crop}")
        self.scales, self.crop = tuple(scales), crop

    @property
    def num_views(self) -> int:
        return len(self.scales) * 3 * 6 * 2

    def squares(self, img: Image.Image) -> list[Image.Image]:
        w, h = img.size
        s = min(w, h)
        if w >= h:  # landscape (or square): left, centre, right
            return [_crop(img, x, 0, s) for x in (0, (w - s) // 2, w - s)]
        return [_crop(img, 0, y, s) for y in (0, (h - s) // 2, h - s)]

    def images(self, img: Image.Image) -> list[Image.Image]:
        views = []
        for scale in self.scales:
            for sq in self.squares(resize_shorter(img, scale)):
                six = five_crops(sq, self.crop) + [sq.resize((self.crop, self.crop), Image.BILINEAR)]
                views += six + [_mirror(v) for v in six]
        return views

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        return _stack(self.images(decode_rgb(data, min(self.scales))))


class DenseViews:
    """VGG Sec. 3.2: the whole image, isotropically rescaled so that its shorter side is Q, and its
    horizontal mirror; one ``2 x 3 x H_q x W_q`` tensor per scale Q (``mirror=False``: 1 view)."""

    def __init__(self, scales: tuple[int, ...], mirror: bool = True):
        self.scales, self.mirror = tuple(scales), mirror

    def images(self, img: Image.Image) -> list[list[Image.Image]]:
        out = []
        for q in self.scales:
            im = resize_shorter(img, q)
            out.append([im, _mirror(im)] if self.mirror else [im])
        return out

    def __call__(self, data: bytes, rng: random.Random | None = None) -> list[torch.Tensor]:
        return [_stack(views) for views in self.images(decode_rgb(data, min(self.scales)))]


class DenseStream(EvalStream):
    """``EvalStream`` (same exactly-once index ranges) whose samples are lists of per-scale tensors
    of different sizes: one image per batch, the batch a list over scales of ``1 x V x 3 x H x W``."""

    def collate(self, xs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        return [torch.stack([x[s] for x in xs]) for s in range(len(xs[0]))]


# -- combining the views on the device ---------------------------------------------------------


def _logits(out) -> torch.Tensor:
    # nets with auxiliary heads return (main, aux...) only in train mode; be explicit anyway
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def average_views(model: nn.Module, x: torch.Tensor, max_batch: int) -> torch.Tensor:
    """``B x K x 3 x H x W`` views -> ``B x classes``: the softmax averaged over the K views
    (AlexNet Sec. 4.1: "averaging the predictions made by the network's softmax layer")."""
    b, k = x.shape[:2]
    flat = x.flatten(0, 1)
    probs = torch.cat([F.softmax(_logits(model(c)).float(), dim=1) for c in flat.split(max_batch)])
    return probs.view(b, k, -1).mean(dim=1)


@torch.no_grad()
def dense_posteriors(net: nn.Module, scales: list[torch.Tensor]) -> torch.Tensor:
    """VGG Sec. 3.2 and 4.2, per scale: the class score map is spatially averaged, the softmax of
    the image and of its mirror are averaged; then the posteriors are averaged over the scales.

    ``net`` is the fully-convolutional form (``B x classes x h x w`` score map) or a net with
    global pooling that returns ``B x classes`` directly at any size.
    """
    per_scale = []
    for x in scales:  # B x V x 3 x H x W
        b, v = x.shape[:2]
        out = _logits(net(x.flatten(0, 1))).float()
        if out.dim() == 4:  # score map: "spatially averaged (sum-pooled)"
            out = out.mean(dim=(2, 3))
        per_scale.append(F.softmax(out, dim=1).view(b, v, -1).mean(dim=1))
    return torch.stack(per_scale).mean(dim=0)


def _has_fixed_adaptive_pool(model: nn.Module) -> bool:
    for m in model.modules():
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
            if any(s not in (1, None) for s in size):
                return True
    return False


@dataclass
class Protocol:
    """A named test protocol: the worker-side views and the device-side combination."""

    name: str
    transform: object
    params: dict
    views: int  # views per image per scale (dense: per scale, before the score map)
    max_batch: int = 128  # views per forward pass on the device
    _fc_cache: tuple | None = field(default=None, repr=False)

    def stream(self, shards, *, batch_size: int, rank: int, world_size: int, num_workers: int) -> EvalStream:
        if self.name == "dense":
            # whole images of different sizes: one image per batch
            return DenseStream(shards, batch_size=1, transform=self.transform, rank=rank,
                               world_size=world_size, num_workers=num_workers)
        # keep about `batch_size` views per device forward: images per batch = batch_size // views
        self.max_batch = max(batch_size, 1)
        return EvalStream(shards, batch_size=max(1, batch_size // self.views), transform=self.transform,
                          rank=rank, world_size=world_size, num_workers=num_workers)

    def fully_conv(self, model: nn.Module) -> nn.Module:
        """``model.to_fully_conv()`` (VGG Sec. 3.2), rebuilt whenever the weights change."""
        if not hasattr(model, "to_fully_conv"):
            if _has_fixed_adaptive_pool(model):
                raise ProtocolError(
                    f"{type(model).__name__} pools to a fixed grid larger than 1x1 and has no to_fully_conv(): "
                    f"--protocol dense is undefined for it; use center, flip or tencrop"
                )
            return model  # global pooling: run at the larger size directly (ResNet Sec. 3.4)
        version = (id(model), tuple(p._version for p in model.parameters()))
        if self._fc_cache is None or self._fc_cache[0] != version:
            self._fc_cache = (version, model.to_fully_conv().eval())
        return self._fc_cache[1]

    @torch.no_grad()
    def predict(self, model: nn.Module, x) -> torch.Tensor:
        """Class posteriors ``B x classes`` of a batch of this protocol's views."""
        if self.name == "dense":
            net = self.fully_conv(model)
            try:
                return dense_posteriors(net, x)
            except RuntimeError as e:
                if "shape" in str(e) or "size" in str(e):
                    raise ProtocolError(
                        f"{type(model).__name__} cannot run on a whole {tuple(x[0].shape[-2:])} image ({e}); it has "
                        f"neither to_fully_conv() nor global pooling: --protocol dense is undefined for it"
                    ) from None
                raise
        return average_views(model, x, self.max_batch)


def build_protocol(
    name: str,
    *,
    crop: int,
    resize: int,
    scales: list[int] | None = None,
    crop_ratio: float | None = None,
    tencrop_square: bool = True,
    dense_mirror: bool = True,
) -> Protocol:
    """The protocol ``name`` for a net trained at ``crop`` (the recipe's ``data.crop``).

    ``resize`` is the recipe's shorter side (``data.resize``); ``crop_ratio`` (crop / shorter
    side, e.g. 0.875 for 224 of 256) overrides it for center/flip/tencrop; ``scales`` are the
    shorter sides: one value for center/flip/tencrop (overriding ``resize``), the Q set of
    ``dense`` (default: ``[resize]``, VGG's Q = S of Table 3), the four scales of
    ``multicrop144`` (default 256, 288, 320, 352, GoogLeNet Sec. 10).
    """
    if name not in PROTOCOLS:
        raise ProtocolError(f"--protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    if scales is not None and (not scales or any(int(s) <= 0 for s in scales)):
        raise ProtocolError(f"--protocol_scales {scales}: give one or more positive shorter-side sizes")
    if crop_ratio is not None:
        if name not in ("center", "flip", "tencrop"):
            raise ProtocolError(f"--protocol_crop_ratio applies to center, flip and tencrop, not {name}")
        if not 0 < crop_ratio <= 1:
            raise ProtocolError(f"--protocol_crop_ratio {crop_ratio}: must be in (0, 1] (crop / shorter side)")
        if scales is not None:
            raise ProtocolError("give --protocol_crop_ratio or --protocol_scales, not both")
        resize = round(crop / crop_ratio)
    if name in ("center", "flip", "tencrop"):
        if scales is not None:
            if len(scales) != 1:
                raise ProtocolError(f"--protocol_scales {scales}: {name} takes one shorter side")
            resize = int(scales[0])
        if name == "center":
            return Protocol(name, CenterViews(resize, crop), {"resize": resize, "crop": crop, "scales": [resize]}, 1)
        if name == "flip":
            return Protocol(name, FlipViews(resize, crop),
                            {"resize": resize, "crop": crop, "scales": [resize], "mirror": True}, 2)
        return Protocol(name, TenCropViews(resize, crop, square=tencrop_square),
                        {"resize": resize, "crop": crop, "scales": [resize], "square": tencrop_square,
                         "mirror": True}, 10)
    if name == "dense":
        qs = [int(s) for s in (scales or [resize])]
        if min(qs) < crop:
            # smaller than the training crop the score map would be empty
            raise ProtocolError(f"--protocol_scales {qs}: dense scales must be >= the training crop {crop}")
        return Protocol(name, DenseViews(tuple(qs), mirror=dense_mirror),
                        {"scales": qs, "crop": crop, "mirror": dense_mirror}, 2 if dense_mirror else 1)
    qs = [int(s) for s in (scales or [256, 288, 320, 352])]
    views = MultiCrop144Views(tuple(qs), crop)
    return Protocol(name, views, {"scales": qs, "crop": crop, "views": views.num_views}, views.num_views)
