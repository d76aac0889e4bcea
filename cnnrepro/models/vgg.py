"""VGG: configurations A, A-LRN, B, C, D and E.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, arXiv:1409.1556. Architecture: Sec. 2.1-2.2, Table 1; parameters: Table 2.

Table 1, the conv part (every conv is stride 1 with "same" padding and a ReLU; "conv3-64"
is a 3x3 conv with 64 channels; maxpool is 2x2 stride 2):

    A          A-LRN      B          C          D          E
    (11 wt)    (11 wt)    (13 wt)    (16 wt)    (16 wt)    (19 wt)
    conv3-64   conv3-64   conv3-64   conv3-64   conv3-64   conv3-64
               LRN        conv3-64   conv3-64   conv3-64   conv3-64
    maxpool
    conv3-128  conv3-128  conv3-128  conv3-128  conv3-128  conv3-128
                          conv3-128  conv3-128  conv3-128  conv3-128
    maxpool
    conv3-256  x2 in A, A-LRN, B; + conv1-256 in C; + conv3-256 in D; + 2 conv3-256 in E
    maxpool
    conv3-512  x2 in A, A-LRN, B; + conv1-512 in C; + conv3-512 in D; + 2 conv3-512 in E
    maxpool
    conv3-512  (as the block above)
    maxpool
    FC-4096, FC-4096, FC-1000, soft-max

Table 2 (millions of parameters): A, A-LRN 133; B 133; C 134; D 138; E 144.

Training (Sec. 3.1): dropout 0.5 on the first two FC layers; 224x224 crops; the RGB mean
subtracted (Sec. 2.1). Initialisation: net A from random N(0, 1e-2) weights and zero biases,
deeper nets from A's first four conv and last three FC layers; footnote: Glorot & Bengio's
initialisation trains them from scratch as well, so ``init="glorot"`` is offered.
Testing (Sec. 3.2): the FC layers become convolutions (first 7x7, then 1x1) applied densely to
the whole rescaled image: ``to_fully_conv()``.

The ``_bn`` variants add BatchNorm after every conv. They are not in the paper (it predates
BatchNorm); they exist because torchvision ships them and users fine-tune from them.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict

import torch
from torch import nn

from ._fully_conv import convolutionalize
from ._lrn import LocalResponseNorm
from .interop import register_converter
from .registry import register_model

__all__ = ["VGG", "VGG_CFGS", "vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19",
           "vgg11_bn", "vgg13_bn", "vgg16_c_bn", "vgg16_bn", "vgg19_bn"]

VGG_PAPER = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition"

# The columns of Table 1, in the paper's own words, one inner list per max-pooled block.
VGG_CFGS: dict[str, list[list[str]]] = {
    "A": [["conv3-64"], ["conv3-128"], ["conv3-256", "conv3-256"],
          ["conv3-512", "conv3-512"], ["conv3-512", "conv3-512"]],
    "A-LRN": [["conv3-64", "LRN"], ["conv3-128"], ["conv3-256", "conv3-256"],
              ["conv3-512", "conv3-512"], ["conv3-512", "conv3-512"]],
    "B": [["conv3-64", "conv3-64"], ["conv3-128", "conv3-128"], ["conv3-256", "conv3-256"],
          ["conv3-512", "conv3-512"], ["conv3-512", "conv3-512"]],
    "C": [["conv3-64", "conv3-64"], ["conv3-128", "conv3-128"],
          ["conv3-256", "conv3-256", "conv1-256"], ["conv3-512", "conv3-512", "conv1-512"],
          ["conv3-512", "conv3-512", "conv1-512"]],
    "D": [["conv3-64", "conv3-64"], ["conv3-128", "conv3-128"],
          ["conv3-256", "conv3-256", "conv3-256"], ["conv3-512", "conv3-512", "conv3-512"],
          ["conv3-512", "conv3-512", "conv3-512"]],
    "E": [["conv3-64", "conv3-64"], ["conv3-128", "conv3-128"],
          ["conv3-256", "conv3-256", "conv3-256", "conv3-256"],
          ["conv3-512", "conv3-512", "conv3-512", "conv3-512"],
          ["conv3-512", "conv3-512", "conv3-512", "conv3-512"]],
}

_CONV = re.compile(r"conv(\d+)-(\d+)")


def _feature_layers(cfg: str, batch_norm: bool, in_chans: int = 3) -> list[tuple[str, nn.Module]]:
    """(name, module) for the conv part, in forward order; names follow the paper's Caffe
    models (conv3_2 = second conv of block 3)."""
    layers: list[tuple[str, nn.Module]] = []
    channels = in_chans
    for b, block in enumerate(VGG_CFGS[cfg], 1):
        i = 0
        for spec in block:
            if spec == "LRN":
                # Sec. 2.1: LRN with the parameters of Krizhevsky et al. 2012 (k=2, n=5,
                # alpha=1e-4, beta=0.75). AlexNet's formula has alpha outside any 1/n; torch
                # divides alpha by n, so we pass n * alpha.
                layers.append((f"norm{b}", LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)))
                continue
            k, out = map(int, _CONV.fullmatch(spec).groups())
            i += 1
            # "same" padding: 1 for 3x3, 0 for C's 1x1 (Sec. 2.1), so the map size is kept
            layers.append((f"conv{b}_{i}", nn.Conv2d(channels, out, kernel_size=k, padding=k // 2)))
            if batch_norm:
                # DEVIATION(VGG): BatchNorm is not in the paper; the _bn variants exist for
                # torchvision weight compatibility (BN between conv and ReLU, as torchvision).
                layers.append((f"bn{b}_{i}", nn.BatchNorm2d(out)))
            layers.append((f"relu{b}_{i}", nn.ReLU(inplace=True)))
            channels = out
        layers.append((f"pool{b}", nn.MaxPool2d(kernel_size=2, stride=2)))
    return layers


def _classifier_layers(num_classes: int, dropout: float) -> list[tuple[str, nn.Module]]:
    return [
        ("fc6", nn.Linear(512 * 7 * 7, 4096)),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(dropout)),  # Sec. 3.1: dropout on the first two FC layers
        ("fc7", nn.Linear(4096, 4096)),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(dropout)),
        ("fc8", nn.Linear(4096, num_classes)),
    ]


class VGG(nn.Module):
    def __init__(
        self,
        cfg: str,
        *,
        batch_norm: bool = False,
        num_classes: int = 1000,
        dropout: float = 0.5,
        init: str = "normal",
        init_std: float = 0.01,
        in_chans: int = 3,
    ):
        super().__init__()
        if init not in ("normal", "glorot"):
            raise ValueError(f"init must be 'normal' or 'glorot', got {init!r}")
        self.cfg, self.init, self.init_std = cfg, init, init_std
        self.features = nn.Sequential(OrderedDict(_feature_layers(cfg, batch_norm, in_chans)))
        self.classifier = nn.Sequential(OrderedDict(_classifier_layers(num_classes, dropout)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Sec. 3.1: "weights from a normal distribution with the zero mean and 10^-2 variance",
        # biases 0. Taken literally that is std 0.1; we default to std 0.01, AlexNet's N(0, 0.01)
        # that the sentence echoes and most re-implementations use (with std 0.1 a 3x3x64 conv
        # multiplies the activation scale by about sqrt(576 * 0.01) = 2.4, layer after layer).
        # ``init_std=0.1`` gives the literal reading.
        # Footnote to Sec. 3.1: Glorot & Bengio (2010) init works without pre-training from A.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.init == "glorot":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.normal_(m.weight, mean=0.0, std=self.init_std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 3 x 224 x 224; each block keeps the size, each pool halves it:
        # 64 x 112, 128 x 56, 256 x 28, 512 x 14, 512 x 7
        x = self.features(x)
        # N x 512 x 7 x 7
        x = torch.flatten(x, 1)
        # N x 25088
        return self.classifier(x)
        # N x num_classes

    def to_fully_conv(self) -> nn.Module:
        """Sec. 3.2 dense evaluation: fc6 as a 7x7 conv, fc7/fc8 as 1x1 convs.

        N x 3 x H x W -> N x classes x (H/32 - 6) x (W/32 - 6): 1x1 at 224, 2x2 at 256.
        """
        return convolutionalize(self.features, self.classifier, (512, 7, 7))


def _build(cfg: str, batch_norm: bool, num_classes: int, **kwargs) -> VGG:
    return VGG(cfg, batch_norm=batch_norm, num_classes=num_classes, **kwargs)


_common = dict(paper=VGG_PAPER, arxiv="1409.1556", year=2014, input_size=(3, 224, 224),
               normalization="mean_rgb")


@register_model(**_common)
def vgg11(*, num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration A."""
    return _build("A", False, num_classes, **kwargs)


@register_model(**_common)
def vgg11_lrn(*, num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration A-LRN: A with AlexNet's LRN after the first conv layer."""
    return _build("A-LRN", False, num_classes, **kwargs)


@register_model(**_common)
def vgg13(*, num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration B."""
    return _build("B", False, num_classes, **kwargs)


@register_model(**_common)
def vgg16_c(*, num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration C: 16 weight layers, the third conv of blocks 3-5 is 1x1."""
    return _build("C", False, num_classes, **kwargs)


@register_model(**_common)
def vgg16(*, num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration D."""
    return _build("D", False, num_classes, **kwargs)


@register_model(**_common)
def vgg19(*, num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration E."""
    return _build("E", False, num_classes, **kwargs)


# BatchNorm variants: one per configuration with a torchvision counterpart (A, B, D, E) plus C.
# No A-LRN_bn: A-LRN only exists to show that LRN does not help (Sec. 4.1); stacking BN on it
# answers no question of the paper.
@register_model(**_common)
def vgg11_bn(*, num_classes: int = 1000, **kwargs) -> VGG:
    return _build("A", True, num_classes, **kwargs)


@register_model(**_common)
def vgg13_bn(*, num_classes: int = 1000, **kwargs) -> VGG:
    return _build("B", True, num_classes, **kwargs)


@register_model(**_common)
def vgg16_c_bn(*, num_classes: int = 1000, **kwargs) -> VGG:
    return _build("C", True, num_classes, **kwargs)


@register_model(**_common)
def vgg16_bn(*, num_classes: int = 1000, **kwargs) -> VGG:
    return _build("D", True, num_classes, **kwargs)


@register_model(**_common)
def vgg19_bn(*, num_classes: int = 1000, **kwargs) -> VGG:
    return _build("E", True, num_classes, **kwargs)


# Weight interop with torchvision's vgg11/13/16/19(+_bn): its features are the same layers in
# the same order, numbered instead of named, and its classifier is Linear, ReLU, Dropout, Linear,
# ReLU, Dropout, Linear like ours. Its AdaptiveAvgPool2d((7, 7)) has no weights and is the
# identity at 224 (pool5 is already 7x7).
def _torchvision_converter(cfg: str, batch_norm: bool):
    @functools.cache
    def layer_names() -> dict[str, list[str]]:
        # only the names are needed: the layers are built on the meta device, when a conversion
        # first runs. Built at import time with real weights, the eight variants' 100M-parameter
        # heads cost every `cnnrepro` command 4 s of random initialisation before it could start.
        with torch.device("meta"):
            return {"features": [name for name, _ in _feature_layers(cfg, batch_norm)],
                    "classifier": [name for name, _ in _classifier_layers(1000, 0.5)]}

    def convert(state_dict):
        names = layer_names()
        out = {}
        for key, value in state_dict.items():
            part, index, param = key.split(".")
            out[f"{part}.{names[part][int(index)]}.{param}"] = value
        return out

    return convert


for _name, _cfg in [("vgg11", "A"), ("vgg13", "B"), ("vgg16", "D"), ("vgg19", "E")]:
    register_converter(_name, f"torchvision:{_name}")(_torchvision_converter(_cfg, False))
    register_converter(f"{_name}_bn", f"torchvision:{_name}_bn")(_torchvision_converter(_cfg, True))
