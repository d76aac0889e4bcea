"""The papers' test protocols: which views of a validation image a net sees, and how its class
posteriors are combined.

Each protocol has two halves, split as the training transforms are (``cnnrepro.data.transforms``):

- a per-sample transform that runs in the loader workers on uint8 data and returns, per image,
  a ``K x 3 x H x W`` uint8 tensor of its K views (``dense``/``multiscale_fc``: a list of
  ``V x 3 x H_q x W_q`` tensors, one per scale, since the scales differ in size;
  ``multicrop150+dense``: the crops tensor followed by the per-scale tensors);
- ``predict(model, x)``, run on the device by ``ClassifierModule``, which turns a batch of views
  into one ``B x classes`` tensor of log class scores whose top-k is the protocol's ranking.

Ranking. The papers average softmax posteriors (AlexNet Sec. 4.1, VGG Sec. 3.2/4.2/4.3,
GoogLeNet Sec. 7), except fb.resnet.torch's 10-crop, which sums the logits (its ``train.lua``,
``computeScore``: "Sum over crops", the ``exp()`` commented out). A posterior averaged in float32
is exactly 0 for every class that trails the top logit by more than ~104 in every view, and then
top-5 is an arbitrary tie-break among zeros. ``predict`` therefore returns ``log(mean_k p_k)``,
computed as ``logsumexp_k(log_softmax) - log K`` in float64: the same ranking as the mean
posterior, without the underflow; for logit averaging it returns ``log_softmax(mean logits)``.

Pixels. Every protocol resizes and crops as torchvision does (``data.transforms.resized_size``,
``center_offset``), decodes JPEGs at full size unless ``reduced_decode`` is asked for, and says
so in its ``params["preprocessing"]``, which the run record stores.

The stream under every protocol is an ``EvalStream``: each validation image is read exactly once,
by one worker of one rank, whatever the number of views it is expanded into.

| name | paper | views |
|---|---|---|
| ``center`` | (every paper's single-crop number) | shorter side to ``resize``, central ``crop`` |
| ``flip`` | (centre crop + its mirror) | 2 |
| ``tencrop`` | AlexNet Sec. 4.1, ZFNet Sec. 3, ResNet Sec. 3.4; ``variant fb``: DenseNet (fb.resnet.torch) | 10 |
| ``dense`` | VGG Sec. 3.2 / 4.2 (fully-convolutional, multi-scale) | map x 2 x scales |
| ``multiscale_fc`` | ResNet Sec. 3.4 (fully-convolutional, scores averaged over 5 scales) | map x scales |
| ``multicrop144`` | GoogLeNet Sec. 7 | 4 scales x 3 squares x 6 crops x 2 = 144 |
| ``multicrop150`` | VGG Sec. 3.2, Table 5 | 3 scales x 5x5 grid x 2 = 150 |
| ``multicrop150+dense`` | VGG Sec. 4.3, Table 5 ("multi-crop & dense") | 150 crops + dense, posteriors averaged |
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnrepro.data.stream import EvalStream
from cnnrepro.errors import UserError
from cnnrepro.data.transforms import (center_offset, decode_rgb, eval_preprocessing, read_header, resize_shorter,
                                      resized_size, to_uint8_tensor, window_of_resized)

__all__ = [
    "PROTOCOLS",
    "TENCROP_VARIANTS",
    "Protocol",
    "build_protocol",
    "ProtocolError",
    "CenterViews",
    "FlipViews",
    "TenCropViews",
    "MultiCrop144Views",
    "MultiCrop150Views",
    "DenseViews",
    "CombinedViews",
    "average_views",
    "dense_posteriors",
    "ProtocolSet",
    "paper_protocols",
]

# the one list of protocol names: the CLI's --protocol choices and the results table read it
PROTOCOLS = ("center", "flip", "tencrop", "dense", "multiscale_fc", "multicrop144", "multicrop150",
             "multicrop150+dense")
# whole-image protocols: images of different sizes, one image per batch
WHOLE_IMAGE = ("dense", "multiscale_fc", "multicrop150+dense")
# --protocol_tencrop_variant: where the ten crops are cut and how their outputs are combined
TENCROP_VARIANTS = ("alexnet", "torchvision", "fb")
# VGG Table 5: "three test scales Q were considered: {256, 384, 512}" (S sampled from [256; 512])
VGG_MULTICROP_SCALES = (256, 384, 512)
# ResNet Sec. 3.4: "the shorter side is in {224, 256, 384, 480, 640}"
RESNET_FC_SCALES = (224, 256, 384, 480, 640)


class ProtocolError(UserError, ValueError):
    """A protocol asked for something it cannot do; the message names the flag."""


def _mirror(img: Image.Image) -> Image.Image:
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def _crop(img: Image.Image, x0: int, y0: int, size: int) -> Image.Image:
    return img.crop((x0, y0, x0 + size, y0 + size))


def five_crops(img: Image.Image, size: int, centre=center_offset) -> list[Image.Image]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``size`` squares of ``img``
    (torchvision's ``five_crop`` order and centre rounding; ``centre`` overrides the rounding)."""
    w, h = img.size
    if size > min(w, h):
        raise ProtocolError(f"crop {size} is larger than the {w}x{h} image it is cut from")
    return [
        _crop(img, 0, 0, size),
        _crop(img, w - size, 0, size),
        _crop(img, 0, h - size, size),
        _crop(img, w - size, h - size, size),
        _crop(img, centre(w, size), centre(h, size), size),
    ]


def _fb_centre(length: int, size: int) -> int:
    # fb.resnet.torch datasets/transforms.lua, CenterCrop: w1 = math.ceil((width - size) / 2)
    return -(-(length - size) // 2)


def _stack(imgs: list[Image.Image]) -> torch.Tensor:
    return torch.stack([to_uint8_tensor(i) for i in imgs])


class _Decoding:
    """Full-size JPEG decoding unless ``reduced_decode`` (then libjpeg's DCT scaling down to the
    smallest shorter side the protocol resizes to: ``decode_rgb``)."""

    reduced_decode = False

    def decode(self, data: bytes, min_side: int) -> Image.Image:
        return decode_rgb(data, min_side if self.reduced_decode else None)


class CenterViews(_Decoding):
    """One view: shorter side to ``resize``, the central ``crop`` x ``crop`` (torchvision's
    ``Resize(resize)`` + ``CenterCrop(crop)``, pixel for pixel)."""

    def __init__(self, resize: int, crop: int, reduced_decode: bool = False):
        if crop > resize:
            raise ProtocolError(f"crop {crop} is larger than the resized shorter side {resize}")
        self.resize, self.crop, self.reduced_decode = resize, crop, reduced_decode

    def images(self, img: Image.Image) -> list[Image.Image]:
        img = resize_shorter(img, self.resize)
        w, h = img.size
        return [_crop(img, center_offset(w, self.crop), center_offset(h, self.crop), self.crop)]

    def from_image(self, img: Image.Image) -> torch.Tensor:
        """The views of a decoded image (``__call__`` = decode, then this; ``ProtocolSet`` shares one
        decode between protocols)."""
        return _stack(self.images(img))

    # the views are the centre window of the resized image, or its mirror: only that window is
    # decoded and resampled (``window_of_resized``: the same pixels as ``images``, bit for bit)
    centre_only = True

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        if self.reduced_decode or not self.centre_only:
            return self.from_image(self.decode(data, self.resize))
        w, h, reason = read_header(data)
        rw, rh = resized_size(w, h, self.resize)
        x0, y0 = center_offset(rw, self.crop), center_offset(rh, self.crop)
        c = window_of_resized(data, (w, h), reason, (rw, rh), x0, y0, self.crop, self.crop)
        return self.centre_views(c)

    def centre_views(self, c: torch.Tensor) -> torch.Tensor:
        return c.unsqueeze(0)


class FlipViews(CenterViews):
    """The centre crop and its horizontal mirror."""

    def images(self, img: Image.Image) -> list[Image.Image]:
        (c,) = super().images(img)
        return [c, _mirror(c)]

    def centre_views(self, c: torch.Tensor) -> torch.Tensor:
        return torch.stack([c, c.flip(-1)])


class TenCropViews(CenterViews):
    """Four corner and centre ``crop`` patches and their horizontal reflections (ten views).

    ``variant``:

    - ``alexnet``: AlexNet Sec. 2 + 4.1: shorter side to ``resize``, the central ``resize``
      square, its 4 corner and centre patches and their reflections; ZFNet Sec. 3 states the same
      crops, and ResNet Sec. 3.4 cites AlexNet for its "standard 10-crop testing". Softmax averaged.
    - ``torchvision``: torchvision's ``TenCrop``: the five crops of the whole resized image and the
      five crops of its mirror image. Softmax averaged.
    - ``fb``: fb.resnet.torch (DenseNet's code base): ``Scale(256)`` (bicubic) then ``TenCrop``
      (``datasets/transforms.lua``): centre (offset ``ceil``) and corners of the whole resized
      image and of its mirror image; the logits are summed (``train.lua`` ``computeScore``).
      # DEVIATION(fb.resnet.torch): Torch7's ``image.scale`` bicubic kernel is not PIL's
      # antialiased bicubic, and how it rounds the non-integer long side (w/h * 256) is
      # UNVERIFIED (we truncate, as torchvision does): the pixels differ slightly.
    """

    centre_only = False  # corner crops: the whole resized image is read, nothing to skip

    def __init__(self, resize: int, crop: int, variant: str = "alexnet", reduced_decode: bool = False):
        super().__init__(resize, crop, reduced_decode)
        if variant not in TENCROP_VARIANTS:
            raise ProtocolError(f"--protocol_tencrop_variant {variant!r}: choose one of {', '.join(TENCROP_VARIANTS)}")
        self.variant = variant

    def images(self, img: Image.Image) -> list[Image.Image]:
        if self.variant == "alexnet":
            img = resize_shorter(img, self.resize)
            w, h = img.size
            img = _crop(img, center_offset(w, self.resize), center_offset(h, self.resize), self.resize)
            crops = five_crops(img, self.crop)
            return crops + [_mirror(c) for c in crops]
        if self.variant == "torchvision":
            img = resize_shorter(img, self.resize)
            return five_crops(img, self.crop) + five_crops(_mirror(img), self.crop)
        img = resize_shorter(img, self.resize, Image.BICUBIC)
        return five_crops(img, self.crop, _fb_centre) + five_crops(_mirror(img), self.crop, _fb_centre)


class MultiCrop144Views(_Decoding):
    """GoogLeNet Sec. 7: "resize the image to 4 scales where the shorter dimension (height or
    width) is 256, 288, 320 and 352 respectively, take the left, center and right square of these
    resized images (in the case of portrait images, we take the top, center and bottom squares).
    For each square, we then take the 4 corners and the center 224x224 crop as well as the square
    resized to 224x224, and their mirrored versions." 4 x 3 x 6 x 2 = 144 views.

    A square image has three identical squares per scale; they are kept (the paper's count).
    """

    def __init__(self, scales: tuple[int, ...] = (256, 288, 320, 352), crop: int = 224, reduced_decode: bool = False):
        if min(scales) < crop:
            raise ProtocolError(f"--protocol_scales {list(scales)}: every scale must be >= the crop {crop}")
        self.scales, self.crop, self.reduced_decode = tuple(scales), crop, reduced_decode

    @property
    def num_views(self) -> int:
        return len(self.scales) * 3 * 6 * 2

    def squares(self, img: Image.Image) -> list[Image.Image]:
        w, h = img.size
        s = min(w, h)
        if w >= h:  # landscape (or square): left, centre, right
            return [_crop(img, x, 0, s) for x in (0, center_offset(w, s), w - s)]
        return [_crop(img, 0, y, s) for y in (0, center_offset(h, s), h - s)]

    def images(self, img: Image.Image) -> list[Image.Image]:
        views = []
        for scale in self.scales:
            for sq in self.squares(resize_shorter(img, scale)):
                six = five_crops(sq, self.crop) + [sq.resize((self.crop, self.crop), Image.BILINEAR)]
                views += six + [_mirror(v) for v in six]
        return views

    def from_image(self, img: Image.Image) -> torch.Tensor:
        return _stack(self.images(img))

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        return self.from_image(self.decode(data, min(self.scales)))


def grid_offsets(length: int, size: int, n: int) -> list[int]:
    """``n`` offsets of a ``size`` window spread evenly over ``length`` pixels, first flush with
    one edge and last with the other, each rounded as torchvision rounds a centre."""
    if n == 1:
        return [center_offset(length, size)]
    return [int(round(i * (length - size) / (n - 1))) for i in range(n)]


class MultiCrop150Views(_Decoding):
    """VGG Sec. 3.2: "50 crops per scale (5 x 5 regular grid with 2 flips), for a total of 150
    crops over 3 scales"; Table 5: S sampled from [256; 512] and Q = {256, 384, 512}.

    Per scale Q: shorter side to Q, ``crop`` x ``crop`` windows on a 5 x 5 grid spanning the
    whole resized image (corners flush with its corners), then their 25 mirrors.
    UNVERIFIED: the paper does not give the grid's placement (whole image vs a central square)
    nor its rounding; we span the whole image and round as torchvision rounds a centre crop.
    """

    grid = 5

    def __init__(self, scales: tuple[int, ...] = VGG_MULTICROP_SCALES, crop: int = 224, reduced_decode: bool = False):
        if min(scales) < crop:
            raise ProtocolError(f"--protocol_scales {list(scales)}: every scale must be >= the crop {crop}")
        self.scales, self.crop, self.reduced_decode = tuple(scales), crop, reduced_decode

    @property
    def num_views(self) -> int:
        return len(self.scales) * self.grid * self.grid * 2

    def images(self, img: Image.Image) -> list[Image.Image]:
        views = []
        for q in self.scales:
            im = resize_shorter(img, q)
            w, h = im.size
            crops = [_crop(im, x, y, self.crop) for y in grid_offsets(h, self.crop, self.grid)
                     for x in grid_offsets(w, self.crop, self.grid)]
            views += crops + [_mirror(c) for c in crops]
        return views

    def from_image(self, img: Image.Image) -> torch.Tensor:
        return _stack(self.images(img))

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        return self.from_image(self.decode(data, min(self.scales)))


class DenseViews(_Decoding):
    """VGG Sec. 3.2: the whole image, isotropically rescaled so that its shorter side is Q, and its
    horizontal mirror; one ``2 x 3 x H_q x W_q`` tensor per scale Q (``mirror=False``: 1 view)."""

    def __init__(self, scales: tuple[int, ...], mirror: bool = True, reduced_decode: bool = False):
        self.scales, self.mirror, self.reduced_decode = tuple(scales), mirror, reduced_decode

    def images(self, img: Image.Image) -> list[list[Image.Image]]:
        out = []
        for q in self.scales:
            im = resize_shorter(img, q)
            out.append([im, _mirror(im)] if self.mirror else [im])
        return out

    def tensors(self, img: Image.Image) -> list[torch.Tensor]:
        return [_stack(views) for views in self.images(img)]

    def from_image(self, img: Image.Image) -> list[torch.Tensor]:
        return self.tensors(img)

    def __call__(self, data: bytes, rng: random.Random | None = None) -> list[torch.Tensor]:
        return self.from_image(self.decode(data, min(self.scales)))


class CombinedViews(_Decoding):
    """VGG Sec. 4.3 / Table 5, "multi-crop & dense": one decode, the 150 crops and the dense
    scales of the same image; ``[crops, dense scale 1, ...]``."""

    def __init__(self, crops: MultiCrop150Views, dense: DenseViews, reduced_decode: bool = False):
        self.crops, self.dense, self.reduced_decode = crops, dense, reduced_decode

    def from_image(self, img: Image.Image) -> list[torch.Tensor]:
        return [_stack(self.crops.images(img)), *self.dense.tensors(img)]

    def __call__(self, data: bytes, rng: random.Random | None = None) -> list[torch.Tensor]:
        return self.from_image(self.decode(data, min(min(self.crops.scales), min(self.dense.scales))))


class DenseStream(EvalStream):
    """``EvalStream`` (same exactly-once index ranges) whose samples are lists of per-scale tensors
    of different sizes: one image per batch, the batch a list over scales of ``1 x V x 3 x H x W``."""

    def collate(self, xs: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        return [torch.stack([x[s] for x in xs]) for s in range(len(xs[0]))]


# -- combining the views on the device ---------------------------------------------------------


def _logits(out) -> torch.Tensor:
    # nets with auxiliary heads return (main, aux...) only in train mode; be explicit anyway
    return out[0] if isinstance(out, (tuple, list)) else out


def log_mean_softmax(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """``log(mean over dim of softmax(logits))`` in float64, without forming the posteriors: the
    mean posterior's ranking even where float32 posteriors underflow to 0."""
    logp = F.log_softmax(logits.double(), dim=-1)
    return torch.logsumexp(logp, dim=dim) - math.log(logits.shape[dim])


def log_mean_probs(log_probs: list[torch.Tensor]) -> torch.Tensor:
    """log of the mean of several posteriors given as log-posteriors (same shape)."""
    return torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))


@torch.no_grad()
def average_views(model: nn.Module, x: torch.Tensor, max_batch: int, combine: str = "softmax") -> torch.Tensor:
    """``B x K x 3 x H x W`` views -> ``B x classes`` log scores.

    ``combine="softmax"``: log of the softmax averaged over the K views (AlexNet Sec. 4.1:
    "averaging the predictions made by the network's softmax layer"); ``"logits"``: log-softmax
    of the mean logits (fb.resnet.torch sums them; the mean ranks the same)."""
    b, k = x.shape[:2]
    flat = x.flatten(0, 1)
    logits = torch.cat([_logits(model(c)).float() for c in flat.split(max_batch)]).view(b, k, -1)
    if combine == "logits":
        return F.log_softmax(logits.double().mean(dim=1), dim=1)
    return log_mean_softmax(logits, dim=1)


@torch.no_grad()
def dense_posteriors(net: nn.Module, scales: list[torch.Tensor]) -> torch.Tensor:
    """VGG Sec. 3.2 and 4.2, per scale: the class score map is spatially averaged, the softmax of
    the image and of its mirror are averaged; then the posteriors are averaged over the scales.
    Returns the log of the averaged posteriors (``log_mean_softmax``).

    ``net`` is the fully-convolutional form (``B x classes x h x w`` score map) or a net with
    global pooling that returns ``B x classes`` directly at any size.
    """
    per_scale = []
    for x in scales:  # B x V x 3 x H x W
        b, v = x.shape[:2]
        out = _logits(net(x.flatten(0, 1))).float()
        if out.dim() == 4:  # score map: "spatially averaged (sum-pooled)"
            out = out.mean(dim=(2, 3))
        per_scale.append(log_mean_softmax(out.view(b, v, -1), dim=1))
    return log_mean_probs(per_scale)


def _has_fixed_adaptive_pool(model: nn.Module) -> bool:
    for m in model.modules():
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
            if any(s not in (1, None) for s in size):
                return True
    return False


@dataclass
class Protocol:
    """A named test protocol: the worker-side views and the device-side combination.

    ``params`` is what the run record stores (``record.protocol_params``): the settings a paper
    entry is matched on, how the views are combined, and the pixel pipeline (``preprocessing``).
    """

    name: str
    transform: object
    params: dict
    views: int  # views per image per scale (dense: per scale, before the score map)
    max_batch: int = 128  # views per forward pass on the device
    combine: str = "softmax"  # "softmax": mean posterior; "logits": mean logits (fb.resnet.torch)
    _fc_cache: tuple | None = field(default=None, repr=False)

    def stream(self, shards, *, batch_size: int, rank: int, world_size: int, num_workers: int,
               sources: bool = False) -> EvalStream:
        """The views of each image, read exactly once; ``sources``: batches also carry each image's
        ILSVRC2012_val_ number (``--data.real_labels``, data/real.py)."""
        self.max_batch = max(batch_size, 1)
        if self.name in WHOLE_IMAGE:
            # whole images of different sizes: one image per batch
            return DenseStream(shards, batch_size=1, transform=self.transform, rank=rank,
                               world_size=world_size, num_workers=num_workers, sources=sources)
        # keep about `batch_size` views per device forward: images per batch = batch_size // views
        return EvalStream(shards, batch_size=max(1, batch_size // self.views), transform=self.transform,
                          rank=rank, world_size=world_size, num_workers=num_workers, sources=sources)

    def fully_conv(self, model: nn.Module) -> nn.Module:
        """``model.to_fully_conv()`` (VGG Sec. 3.2), rebuilt whenever the weights change."""
        if not hasattr(model, "to_fully_conv"):
            if _has_fixed_adaptive_pool(model):
                raise ProtocolError(
                    f"{type(model).__name__} pools to a fixed grid larger than 1x1 and has no to_fully_conv(): "
                    f"--protocol {self.name} is undefined for it; use center, flip or tencrop"
                )
            return model  # global pooling: run at the larger size directly (ResNet Sec. 3.4)
        version = (id(model), tuple(p._version for p in model.parameters()))
        if self._fc_cache is None or self._fc_cache[0] != version:
            self._fc_cache = (version, model.to_fully_conv().eval())
        return self._fc_cache[1]

    def _dense(self, model: nn.Module, scales: list[torch.Tensor]) -> torch.Tensor:
        net = self.fully_conv(model)
        try:
            return dense_posteriors(net, scales)
        except RuntimeError as e:
            if "shape" in str(e) or "size" in str(e):
                raise ProtocolError(
                    f"{type(model).__name__} cannot run on a whole {tuple(scales[0].shape[-2:])} image ({e}); it has "
                    f"neither to_fully_conv() nor global pooling: --protocol {self.name} is undefined for it"
                ) from None
            raise

    @torch.no_grad()
    def predict(self, model: nn.Module, x) -> torch.Tensor:
        """``B x classes`` log class scores of a batch of this protocol's views (log of the averaged
        posteriors, or log-softmax of the averaged logits): rank them for top-k, feed them to NLL."""
        if self.name in ("dense", "multiscale_fc"):
            return self._dense(model, x)
        if self.name == "multicrop150+dense":
            # VGG Sec. 4.3: "averaging their softmax outputs", one posterior from each technique
            crops = average_views(model, x[0], self.max_batch, "softmax")
            return log_mean_probs([crops, self._dense(model, list(x[1:]))])
        return average_views(model, x, self.max_batch, self.combine)


def build_protocol(
    name: str,
    *,
    crop: int,
    resize: int,
    scales: list[int] | None = None,
    crop_ratio: float | None = None,
    tencrop_variant: str | None = None,
    dense_mirror: bool | None = None,
    reduced_decode: bool = False,
) -> Protocol:
    """The protocol ``name`` for a net trained at ``crop`` (the recipe's ``data.crop``).

    ``resize`` is the recipe's shorter side (``data.resize``); ``crop_ratio`` (crop / shorter
    side, e.g. 0.875 for 224 of 256) overrides it for center/flip/tencrop; ``scales`` are the
    shorter sides: one value for center/flip/tencrop (overriding ``resize``), the Q set of
    ``dense`` (default: ``[resize]``, VGG's Q = S of Table 3), of ``multiscale_fc`` (default
    224, 256, 384, 480, 640, ResNet Sec. 3.4), the four scales of ``multicrop144`` (default 256,
    288, 320, 352, GoogLeNet Sec. 7), the three of ``multicrop150`` and ``multicrop150+dense``
    (default 256, 384, 512, VGG Table 5). ``tencrop_variant`` (``TENCROP_VARIANTS``, default
    ``alexnet``) applies to tencrop only. ``reduced_decode``: JPEGs decoded at a reduced DCT
    scale (faster, other pixels); off by default.
    """
    if name not in PROTOCOLS:
        raise ProtocolError(f"--protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    if scales is not None and (not scales or any(int(s) <= 0 for s in scales)):
        raise ProtocolError(f"--protocol_scales {scales}: give one or more positive shorter-side sizes")
    if tencrop_variant is not None and name != "tencrop":
        raise ProtocolError(f"--protocol_tencrop_variant applies to tencrop, not {name}")
    if dense_mirror is not None and name not in ("dense", "multiscale_fc"):
        raise ProtocolError(f"the dense mirror setting applies to dense and multiscale_fc, not {name}")
    if crop_ratio is not None:
        if name not in ("center", "flip", "tencrop"):
            raise ProtocolError(f"--protocol_crop_ratio applies to center, flip and tencrop, not {name}")
        if not 0 < crop_ratio <= 1:
            raise ProtocolError(f"--protocol_crop_ratio {crop_ratio}: must be in (0, 1] (crop / shorter side)")
        if scales is not None:
            raise ProtocolError("give --protocol_crop_ratio or --protocol_scales, not both")
        resize = round(crop / crop_ratio)
    rd = bool(reduced_decode)
    pre = eval_preprocessing(rd)
    if name in ("center", "flip", "tencrop"):
        if scales is not None:
            if len(scales) != 1:
                raise ProtocolError(f"--protocol_scales {scales}: {name} takes one shorter side")
            resize = int(scales[0])
        base = {"resize": resize, "crop": crop, "scales": [resize]}
        if name == "center":
            return Protocol(name, CenterViews(resize, crop, rd), {**base, "preprocessing": pre}, 1)
        if name == "flip":
            return Protocol(name, FlipViews(resize, crop, rd),
                            {**base, "mirror": True, "combine": "softmax_mean", "preprocessing": pre}, 2)
        variant = tencrop_variant or "alexnet"
        views = TenCropViews(resize, crop, variant, rd)
        combine = "logits" if variant == "fb" else "softmax"
        if variant == "fb":
            pre = eval_preprocessing(rd, "bicubic") | {"center_offset": "ceil((L - crop) / 2) (fb.resnet.torch)"}
        return Protocol(name, views,
                        {**base, "variant": variant, "square": variant == "alexnet", "mirror": True,
                         "combine": "logit_sum" if combine == "logits" else "softmax_mean", "preprocessing": pre},
                        10, combine=combine)
    if name in ("dense", "multiscale_fc"):
        default = [resize] if name == "dense" else list(RESNET_FC_SCALES)
        qs = [int(s) for s in (scales or default)]
        # VGG Sec. 3.2 mirrors every image; ResNet Sec. 3.4 does not mention a mirror.
        # UNVERIFIED (ResNet): "average the scores" is read as VGG's averaged soft-max posteriors,
        # the form the sentence cites ([41]).
        mirror = (name == "dense") if dense_mirror is None else bool(dense_mirror)
        if min(qs) < crop:
            # smaller than the training crop the score map would be empty
            raise ProtocolError(f"--protocol_scales {qs}: {name} scales must be >= the training crop {crop}")
        return Protocol(name, DenseViews(tuple(qs), mirror=mirror, reduced_decode=rd),
                        {"scales": qs, "crop": crop, "mirror": mirror, "combine": "softmax_mean",
                         "preprocessing": pre}, 2 if mirror else 1)
    if name == "multicrop144":
        qs = [int(s) for s in (scales or [256, 288, 320, 352])]
        views = MultiCrop144Views(tuple(qs), crop, rd)
        return Protocol(name, views, {"scales": qs, "crop": crop, "views": views.num_views,
                                      "combine": "softmax_mean", "preprocessing": pre}, views.num_views)
    qs = [int(s) for s in (scales or VGG_MULTICROP_SCALES)]
    if len(qs) != 3:
        raise ProtocolError(f"--protocol_scales {qs}: {name} takes three scales Q (VGG Table 5: 256,384,512)")
    mc = MultiCrop150Views(tuple(qs), crop, rd)
    params = {"scales": qs, "crop": crop, "views": mc.num_views, "grid": [5, 5], "mirror": True,
              "combine": "softmax_mean", "preprocessing": pre}
    if name == "multicrop150":
        return Protocol(name, mc, params, mc.num_views)
    dense = DenseViews(tuple(qs), mirror=True, reduced_decode=rd)
    return Protocol(name, CombinedViews(mc, dense, rd), {**params, "dense_mirror": True}, mc.num_views)


# -- `--protocol all`: every protocol a paper reports for the model, in one pass over the data ------


class ProtocolSetViews:
    """Per image: one full-size decode, then each protocol's views of that same image
    (``[views of protocol 1, views of protocol 2, ...]``)."""

    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, data: bytes, rng: random.Random | None = None) -> list:
        img = decode_rgb(data, None)  # what every protocol decodes without reduced_decode
        return [t.from_image(img) for t in self.transforms]


class ProtocolSetStream(EvalStream):
    """``EvalStream`` (the same exactly-once ranges) of ``ProtocolSetViews`` samples; the batch is
    a list over protocols, each collated as that protocol's own stream collates it."""

    def __init__(self, shards, *, whole: list[bool], **kwargs):
        super().__init__(shards, **kwargs)
        self.whole = list(whole)

    def collate(self, xs: list[list]) -> list:
        out = []
        for i, whole in enumerate(self.whole):
            part = [x[i] for x in xs]
            out.append([torch.stack([p[s] for p in part]) for s in range(len(part[0]))] if whole
                       else torch.stack(part))
        return out


@dataclass
class ProtocolSet:
    """Several protocols evaluated in one pass over the validation set (``--protocol all``).

    Each image is read and decoded once; each protocol computes its own views from it and its own
    ranking (``Protocol.predict``), so every protocol's numbers are those of a run of it alone
    (tests/eval/test_protocol_all.py checks this). ``predict`` returns one ``B x classes`` tensor
    per protocol, in ``protocols`` order.
    """

    protocols: list[Protocol]
    name: str = "all"

    def stream(self, shards, *, batch_size: int, rank: int, world_size: int, num_workers: int,
               sources: bool = False) -> EvalStream:
        for p in self.protocols:
            p.max_batch = max(batch_size, 1)
        whole = [p.name in WHOLE_IMAGE for p in self.protocols]
        # whole images differ in size: one image per batch as soon as one protocol needs them
        images = 1 if any(whole) else max(1, batch_size // max(p.views for p in self.protocols))
        return ProtocolSetStream(shards, whole=whole, batch_size=images,
                                 transform=ProtocolSetViews([p.transform for p in self.protocols]),
                                 rank=rank, world_size=world_size, num_workers=num_workers, sources=sources)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: list) -> list[torch.Tensor]:
        return [p.predict(model, xi) for p, xi in zip(self.protocols, x)]


def paper_protocols(arch: str, *, paper: dict, crop: int, resize: int,
                    arch_kwargs: dict | None = None) -> tuple[ProtocolSet, list[str]]:
    """The protocols the paper reports for ``arch`` (results/paper_numbers.yaml entries of this
    model variant whose protocol cnnrepro implements), each with the entry's settings, once each;
    and the entries left out, with why (printed by the CLI, never dropped silently).

    Settings an entry does not give (AlexNet's ten-crop names no sizes) are the recipe's
    (``crop``, ``resize``), as for ``--protocol NAME``. ``paper`` is
    ``results.table.load_paper_numbers()`` (passed in: results imports eval, not the reverse).
    """
    entries = (paper.get(arch) or {}).get("entries", [])
    out: dict[str, Protocol] = {}
    skipped = []
    for e in entries:
        if (e.get("arch_kwargs") or {}) != (arch_kwargs or {}):
            continue  # another variant of the model (ResNet-34 A/B/C): not this net's number
        if e["protocol"] not in PROTOCOLS:
            skipped.append(f"{e['protocol']} ({e['source']}): not implemented in cnnrepro")
            continue
        params = dict(e.get("params") or {})
        scales = params.get("scales")
        if scales is not None and not (isinstance(scales, list) and all(isinstance(q, int) for q in scales)):
            skipped.append(f"{e['protocol']} ({e['source']}): the paper's scales are {scales!r}")
            continue
        name = e["protocol"]
        c, r = int(params.get("crop", crop)), int(params.get("resize", resize))
        try:
            p = build_protocol(name, crop=c, resize=r,
                               scales=scales if name not in ("center", "flip", "tencrop") else None,
                               tencrop_variant=params.get("variant") if name == "tencrop" else None)
        except ProtocolError as err:
            raise ProtocolError(f"--protocol all: {arch}'s paper entry {name} {params} ({e['source']}): {err}") from None
        key = f"{name} {json.dumps(p.params, sort_keys=True)}"
        out.setdefault(key, p)  # VGG reports Q=384 for two training scales: evaluated once
    if not out:
        raise ProtocolError(f"--protocol all: results/paper_numbers.yaml lists no protocol cnnrepro implements for "
                            f"{arch}{' ' + json.dumps(arch_kwargs) if arch_kwargs else ''}; name one with --protocol "
                            f"({', '.join(PROTOCOLS)})")
    return ProtocolSet(list(out.values())), skipped
