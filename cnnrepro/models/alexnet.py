"""AlexNet.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NIPS 2012 (no arXiv id).

Architecture (paper Sec. 3.5 and Fig. 2). The paper split the net over two GPUs; the towers
talk only at conv3 and the FC layers. One module with grouped convolutions (groups=2 in
conv2, conv4, conv5) computes exactly the same function as the two towers.

    layer  kernels            out (at 227x227 input)  notes
    conv1  96 x 11x11x3 /4    96 x 55 x 55            ReLU, LRN, max-pool 3/2
    conv2  256 x 5x5x48       256 x 27 x 27           2 groups; ReLU, LRN, max-pool 3/2
    conv3  384 x 3x3x256      384 x 13 x 13           dense across towers; ReLU
    conv4  384 x 3x3x192      384 x 13 x 13           2 groups; ReLU
    conv5  256 x 3x3x192      256 x 13 x 13           2 groups; ReLU, max-pool 3/2 -> 6x6
    fc6    4096                                       ReLU, dropout 0.5
    fc7    4096                                       ReLU, dropout 0.5
    fc8    1000                                       softmax (in the loss)

Local response normalisation (Sec. 3.3): b = a / (k + alpha * sum_{window n} a^2)^beta with
k=2, n=5, alpha=1e-4, beta=0.75. Overlapping pooling (Sec. 3.4): z=3, s=2. Dropout 0.5 on the
outputs of the first two FC layers (Sec. 4.2). Initialisation (Sec. 5): all weights
N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere. The paper
feeds raw 0..255 pixels minus the training-set mean (Sec. 2): that input scale, this
initialisation and lr 0.01 were tuned together, so the recipe keeps all three.

One weird trick (Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
networks", arXiv:1404.5997) trains a one-tower AlexNet. ``alexnet_owt`` is the layout
torchvision ships as ``alexnet`` (via the Torch ``alexnetowt`` model and cuda-convnet2's
``layers-imagenet-1gpu.cfg``), so that torchvision weights load into it:

    layer  kernels            out (at 224x224 input)  notes
    conv1  64 x 11x11x3 /4 p2 64 x 55 x 55            ReLU, max-pool 3/2
    conv2  192 x 5x5x64 p2    192 x 27 x 27           ReLU, max-pool 3/2
    conv3  384 x 3x3x192 p1   384 x 13 x 13           ReLU
    conv4  256 x 3x3x384 p1   256 x 13 x 13           ReLU  (the paper's footnote 1 says 384)
    conv5  256 x 3x3x256 p1   256 x 13 x 13           ReLU, max-pool 3/2 -> 6x6
    fc6, fc7, fc8  4096, 4096, 1000                   as AlexNet

Both variants have ``to_fully_conv()``: fc6 becomes a 6x6 convolution and fc7/fc8 1x1
convolutions (the dense evaluation of OverFeat and VGG), so a larger image gives a score map.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._fully_conv import convolutionalize
from ._lrn import LocalResponseNorm
from .interop import register_converter
from .registry import register_model

__all__ = ["AlexNet", "AlexNetOWT", "alexnet", "alexnet_owt"]

ALEXNET_PAPER = "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks"


def alexnet_head(num_classes: int, dropout: float, in_features: int = 256 * 6 * 6) -> nn.Sequential:
    """fc6-fc7-fc8 of Sec. 3.5 with dropout on the outputs of fc6 and fc7 (Sec. 4.2); ZFNet
    (Fig. 3) and AlexNet-OWT keep the same head."""
    return nn.Sequential(
        OrderedDict(
            fc6=nn.Linear(in_features, 4096),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout(dropout),
            fc7=nn.Linear(4096, 4096),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout(dropout),
            fc8=nn.Linear(4096, num_classes),
        )
    )


class AlexNet(nn.Module):
    """The paper's two-tower AlexNet as one module with grouped convolutions."""

    def __init__(self, *, num_classes: int = 1000, dropout: float = 0.5, in_chans: int = 3):
        super().__init__()
        # Sec. 3.3: the paper's formula has alpha outside any 1/n; torch's LocalResponseNorm (and
        # ours, models/_lrn.py, which keeps its semantics) divides alpha by the window size n, so
        # we pass n * alpha to compute the paper's formula.
        # (Caffe's re-implementation used alpha/n instead, a slightly weaker normalisation.)
        lrn = dict(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_chans, 96, kernel_size=11, stride=4),
                relu1=nn.ReLU(inplace=True),
                norm1=LocalResponseNorm(**lrn),
                pool1=nn.MaxPool2d(kernel_size=3, stride=2),
                conv2=nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
                relu2=nn.ReLU(inplace=True),
                norm2=LocalResponseNorm(**lrn),
                pool2=nn.MaxPool2d(kernel_size=3, stride=2),
                conv3=nn.Conv2d(256, 384, kernel_size=3, padding=1),
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
                relu5=nn.ReLU(inplace=True),
                pool5=nn.MaxPool2d(kernel_size=3, stride=2),
            )
        )
        # Sec. 4.2: dropout on the outputs of fc6 and fc7 (torchvision drops their inputs instead)
        self.classifier = alexnet_head(num_classes, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Sec. 5: N(0, 0.01) weights; bias 1 in conv2/4/5 and fc6/7 so their ReLUs start with
        # positive inputs, bias 0 in the rest.
        bias_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for name, m in [*self.features.named_children(), *self.classifier.named_children()]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.constant_(m.bias, 1.0 if name in bias_one else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 3 x 227 x 227
        x = self.features(x)
        # N x 256 x 6 x 6
        x = torch.flatten(x, 1)
        # N x 9216
        return self.classifier(x)
        # N x num_classes

    def to_fully_conv(self) -> nn.Module:
        """fc6 as a 6x6 conv, fc7/fc8 as 1x1 convs: N x 3 x H x W -> N x classes x h x w."""
        return convolutionalize(self.features, self.classifier, (256, 6, 6))


OWT_PAPER = "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks"


class AlexNetOWT(nn.Module):
    """One-tower AlexNet of "One weird trick", in torchvision's layout (64-192-384-256-256)."""

    def __init__(self, *, num_classes: int = 1000, dropout: float = 0.5, in_chans: int = 3):
        super().__init__()
        # No LRN: torchvision's alexnet (the reference this variant is weight-compatible with)
        # has none, and neither has the Torch alexnetowt model it was ported from.
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
                relu1=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(kernel_size=3, stride=2),
                conv2=nn.Conv2d(64, 192, kernel_size=5, padding=2),
                relu2=nn.ReLU(inplace=True),
                pool2=nn.MaxPool2d(kernel_size=3, stride=2),
                conv3=nn.Conv2d(192, 384, kernel_size=3, padding=1),
                relu3=nn.ReLU(inplace=True),
                # DEVIATION(One weird trick): the paper's footnote 1 (p. 5) gives conv4 384
                # kernels; torchvision (and cuda-convnet2's 1-GPU config it descends from) has
                # 256, and we keep 256 so torchvision weights load (pytorch/vision#463, #704).
                conv4=nn.Conv2d(384, 256, kernel_size=3, padding=1),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(256, 256, kernel_size=3, padding=1),
                relu5=nn.ReLU(inplace=True),
                pool5=nn.MaxPool2d(kernel_size=3, stride=2),
            )
        )
        # Dropout on the outputs of fc6/fc7 as AlexNet Sec. 4.2. torchvision drops the *inputs*
        # of fc6/fc7 instead (pytorch/vision#549); the two agree in eval mode, so weights and
        # eval outputs are interchangeable, only the training-time noise differs.
        self.classifier = alexnet_head(num_classes, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The OWT paper states no initialisation; we keep torchvision's (PyTorch's default
        # Kaiming-uniform layer init) together with its ImageNet mean/std input scaling, the
        # pair its reference training recipe was run with.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 3 x 224 x 224
        x = self.features(x)
        # N x 256 x 6 x 6  (conv1 55, pool1 27, conv2 27, pool2 13, conv3-5 13, pool5 6)
        x = torch.flatten(x, 1)
        # N x 9216
        return self.classifier(x)
        # N x num_classes

    def to_fully_conv(self) -> nn.Module:
        """fc6 as a 6x6 conv, fc7/fc8 as 1x1 convs: N x 3 x H x W -> N x classes x h x w."""
        return convolutionalize(self.features, self.classifier, (256, 6, 6))


@register_model(
    paper=ALEXNET_PAPER,
    arxiv=None,
    year=2012,
    # DEVIATION(AlexNet): the paper's text says 224x224 patches, but its own layer arithmetic
    # ((227 - 11) / 4 + 1 = 55) needs 227; every re-implementation uses 227.
    input_size=(3, 227, 227),
    normalization="mean_rgb",
)
def alexnet(*, num_classes: int = 1000, **kwargs) -> AlexNet:
    return AlexNet(num_classes=num_classes, **kwargs)


@register_model(
    paper=OWT_PAPER,
    arxiv="1404.5997",
    year=2014,
    input_size=(3, 224, 224),
    normalization="imagenet",
)
def alexnet_owt(*, num_classes: int = 1000, **kwargs) -> AlexNetOWT:
    return AlexNetOWT(num_classes=num_classes, **kwargs)


# torchvision alexnet: features.{0,3,6,8,10} are conv1..conv5, classifier.{1,4,6} fc6..fc8.
# Its AdaptiveAvgPool2d((6, 6)) has no weights and is the identity at 224 (pool5 is 6x6).
_TV_ALEXNET_KEYS = {
    "features.0": "features.conv1",
    "features.3": "features.conv2",
    "features.6": "features.conv3",
    "features.8": "features.conv4",
    "features.10": "features.conv5",
    "classifier.1": "classifier.fc6",
    "classifier.4": "classifier.fc7",
    "classifier.6": "classifier.fc8",
}


@register_converter("alexnet_owt", "torchvision:alexnet")
def _from_torchvision_alexnet(state_dict):
    out = {}
    for key, value in state_dict.items():
        layer, _, param = key.rpartition(".")
        out[f"{_TV_ALEXNET_KEYS[layer]}.{param}"] = value
    return out
