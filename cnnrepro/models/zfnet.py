"""ZFNet.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
arXiv:1311.2901. Architecture: Fig. 3 and Sec. 3, 5.

    layer  kernels              out (at 224x224 input)  notes
    conv1  96 x 7x7x3 /2        96 x 110 x 110          ReLU, max-pool 3/2 -> 55, contrast norm
    conv2  256 x 5x5x96 /2      256 x 26 x 26           ReLU, max-pool 3/2 -> 13, contrast norm
    conv3  384 x 3x3x256        384 x 13 x 13           ReLU
    conv4  384 x 3x3x384        384 x 13 x 13           ReLU
    conv5  256 x 3x3x384        256 x 13 x 13           ReLU, max-pool 3/2 -> 6
    fc6    4096                                         ReLU, dropout 0.5
    fc7    4096                                         ReLU, dropout 0.5
    fc8    1000                                         softmax (in the loss)

Unlike AlexNet, every layer is dense: the model was trained on one GPU, so AlexNet's sparse
two-tower connections are replaced by dense ones (Sec. 5). Training (Sec. 3): weights
initialised to 1e-2 and biases to 0, dropout 0.5 in layers 6 and 7, and "we renormalize each
filter in the convolutional layers whose RMS value exceeds a fixed radius of 1e-1 to this
fixed radius": :func:`renormalize_filters_`, which a training callback calls after every
optimizer step.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .alexnet import alexnet_head
from ._fully_conv import convolutionalize
from ._lrn import LocalResponseNorm
from .registry import register_model

__all__ = ["ZFNet", "zfnet", "renormalize_filters_"]

ZFNET_PAPER = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"


@torch.no_grad()
def renormalize_filters_(model: nn.Module, radius: float = 0.1) -> int:
    """Scale down every conv filter whose RMS exceeds ``radius`` to RMS == ``radius``.

    ZFNet Sec. 3: a few first-layer filters came to dominate, so after each update every filter
    (one output channel's weights of a conv layer) with RMS > 0.1 is rescaled onto that radius.
    Filters at or under the radius, biases and FC layers are left alone. Returns how many
    filters were rescaled.
    """
    rescaled = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight
            rms = w.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            over = rms > radius
            if over.any():
                w.mul_(torch.where(over, radius / rms, torch.ones_like(rms)))
                rescaled += int(over.sum())
    return rescaled


class ZFNet(nn.Module):
    """The ZFNet of Fig. 3 (dense conv layers, 7x7/2 conv1)."""

    def __init__(self, *, num_classes: int = 1000, dropout: float = 0.5, in_chans: int = 3):
        super().__init__()
        # DEVIATION(ZFNet): the paper says layers 1-2 are "contrast normalized across feature
        # maps" (Fig. 3) and gives no formula or constants. We use AlexNet's cross-map LRN with
        # AlexNet's constants (k=2, n=5, alpha=1e-4 in the paper's formula, beta=0.75; torch
        # divides alpha by n, hence 5 * 1e-4), the normalisation ZFNet set out to improve on.
        lrn = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)
        # Fig. 3 has 110 -> 55 and 26 -> 13 after the 3x3/2 pools: (110 - 3) / 2 + 1 = 54.5 and
        # (26 - 3) / 2 + 1 = 12.5 round *up* (cuda-convnet / Caffe pooling), hence ceil_mode.
        self.features = nn.Sequential(
            OrderedDict(
                # (224 + 2*1 - 7) / 2 + 1 = 110: Fig. 3's 110x110 needs one pixel of padding
                conv1=nn.Conv2d(in_chans, 96, kernel_size=7, stride=2, padding=1),
                relu1=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                norm1=LocalResponseNorm(**lrn),
                conv2=nn.Conv2d(96, 256, kernel_size=5, stride=2),
                relu2=nn.ReLU(inplace=True),
                pool2=nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                norm2=LocalResponseNorm(**lrn),
                conv3=nn.Conv2d(256, 384, kernel_size=3, padding=1),
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(384, 384, kernel_size=3, padding=1),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(384, 256, kernel_size=3, padding=1),
                relu5=nn.ReLU(inplace=True),
                pool5=nn.MaxPool2d(kernel_size=3, stride=2),
            )
        )
        self.classifier = alexnet_head(num_classes, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Sec. 3: "All weights are initialized to 1e-2 and biases are set to 0" -- read, as in
        # AlexNet whose recipe this follows, as N(0, 0.01) (a constant 1e-2 would make every
        # filter of a layer identical and training could never break the symmetry).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 3 x 224 x 224
        x = self.features(x)
        # conv1 96x110x110, pool1 96x55x55, conv2 256x26x26, pool2 256x13x13,
        # conv3-5 13x13, pool5 N x 256 x 6 x 6
        x = torch.flatten(x, 1)
        # N x 9216
        return self.classifier(x)
        # N x num_classes

    def to_fully_conv(self) -> nn.Module:
        """fc6 as a 6x6 conv, fc7/fc8 as 1x1 convs: N x 3 x H x W -> N x classes x h x w."""
        return convolutionalize(self.features, self.classifier, (256, 6, 6))


@register_model(paper=ZFNET_PAPER, arxiv="1311.2901", year=2013, input_size=(3, 224, 224),
                normalization="mean_rgb")
def zfnet(*, num_classes: int = 1000, **kwargs) -> ZFNet:
    return ZFNet(num_classes=num_classes, **kwargs)
