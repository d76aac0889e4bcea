"""MobileNet v1 and MobileNet v2.

Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto & Adam, "MobileNets: Efficient
Convolutional Neural Networks for Mobile Vision Applications", arXiv:1704.04861 (2017).

MobileNet v1 body (paper Table 1, 224x224 input). Every conv is followed by BatchNorm and ReLU
(Sec. 3.2, Fig. 3); a depthwise separable conv is a 3x3 depthwise conv (one filter per channel)
then a 1x1 pointwise conv.

    type / stride     filter shape          input size
    Conv / s2         3 x 3 x 3 x 32        224 x 224 x 3
    Conv dw / s1      3 x 3 x 32 dw         112 x 112 x 32
    Conv / s1         1 x 1 x 32 x 64       112 x 112 x 32
    Conv dw / s2      3 x 3 x 64 dw         112 x 112 x 64
    Conv / s1         1 x 1 x 64 x 128      56 x 56 x 64
    Conv dw / s1      3 x 3 x 128 dw        56 x 56 x 128
    Conv / s1         1 x 1 x 128 x 128     56 x 56 x 128
    Conv dw / s2      3 x 3 x 128 dw        56 x 56 x 128
    Conv / s1         1 x 1 x 128 x 256     28 x 28 x 128
    Conv dw / s1      3 x 3 x 256 dw        28 x 28 x 256
    Conv / s1         1 x 1 x 256 x 256     28 x 28 x 256
    Conv dw / s2      3 x 3 x 256 dw        28 x 28 x 256
    Conv / s1         1 x 1 x 256 x 512     14 x 14 x 256
    5x Conv dw / s1   3 x 3 x 512 dw        14 x 14 x 512
       Conv / s1      1 x 1 x 512 x 512     14 x 14 x 512
    Conv dw / s2      3 x 3 x 512 dw        14 x 14 x 512
    Conv / s1         1 x 1 x 512 x 1024    7 x 7 x 512
    Conv dw / s2      3 x 3 x 1024 dw       7 x 7 x 1024     <- s1: see below
    Conv / s1         1 x 1 x 1024 x 1024   7 x 7 x 1024
    Avg Pool / s1     Pool 7 x 7            7 x 7 x 1024
    FC / s1           1024 x 1000           1 x 1 x 1024
    Softmax / s1      Classifier            1 x 1 x 1000

Table 1 prints stride 2 for the last depthwise conv, but its own next row (and the 7x7 average
pool) keep a 7x7 input, so that stride is a typo; the authors' TF-slim code uses stride 1.
Width multiplier alpha (Sec. 3.3) thins every layer to alpha * channels; ``width_mult``.
Table 8 / Table 2: 1.0 MobileNet-224 has 569M mult-adds and 4.2M parameters; Table 2 splits
them by layer type (1x1 conv 94.86% of mult-adds / 74.59% of params, ...), tested here.
The paper gives no weight initialisation, dropout or BN hyperparameters: we use He (fan-out)
init, no dropout, PyTorch's BN defaults.

No released weights convert into ``mobilenet_v1``. The activation is the paper's ReLU (Sec. 3.2:
BN and ReLU after every layer but the final fully connected one; Fig. 3), while both
released MobileNet v1s use ReLU6: the authors' TF-slim code (research/slim/nets/mobilenet_v1.py,
``mobilenet_v1_arg_scope``: ``activation_fn=tf.nn.relu6``) and timm's ``mobilenetv1_100``
(timm 1.0.31 models/efficientnet.py ``_gen_mobilenet_v1``: ``resolve_act_layer(kwargs, 'relu6')``).
timm's tensors have our shapes, but in our net they compute another function (logits far from
timm's, so ``load_library_weights`` and ``--weights`` refuse them); and its only weights
(``ra4_e3600_r224_in1k``: timm's own 3600-epoch recipe, evaluated at 256 px) are no release of the
paper's model, so a ReLU6 variant would buy no paper-row comparison. The converter was removed.

Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", arXiv:1801.04381 (2018). Table 2 (t expansion, c channels, n repeats, s stride):

    input          operator       t   c     n  s
    224^2 x 3      conv2d         -   32    1  2
    112^2 x 32     bottleneck     1   16    1  1
    112^2 x 16     bottleneck     6   24    2  2
    56^2 x 24      bottleneck     6   32    3  2
    28^2 x 32      bottleneck     6   64    4  2
    14^2 x 64      bottleneck     6   96    3  1
    14^2 x 96      bottleneck     6   160   3  2
    7^2 x 160      bottleneck     6   320   1  1
    7^2 x 320      conv2d 1x1     -   1280  1  1
    7^2 x 1280     avgpool 7x7    -   -     1  -
    1 x 1 x 1280   conv2d 1x1     -   k     -

Bottleneck (Table 1): 1x1 expansion + ReLU6, 3x3 depthwise (stride s) + ReLU6, linear 1x1
projection, residual when stride 1 and in == out. MobileNetV2 is torchvision 0.29.1's
``mobilenet_v2`` exactly (same Table 2 setting, ReLU6, linear bottleneck, no expansion conv when
t = 1 as in the authors' code, 1280-channel last conv): we return it. 3.4M params / 300M
MAdds (paper Table 4); torchvision 3,504,872 params / 300.8M MACs.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv_mobilenetv2

from .interop import register_converter
from ._init import he_fan_out_init_
from .registry import register_model

__all__ = ["MobileNetV1", "mobilenet_v1", "mobilenet_v2"]

MOBILENET_V1_PAPER = "Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
MOBILENET_V2_PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks"

# Table 1 body after the first full conv (3x3/2, 32 filters): (depthwise stride, pointwise filters)
# of each depthwise separable layer, in the paper's row order.
MOBILENET_V1_TABLE1 = [
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    *[(1, 512)] * 5,
    (2, 1024),
    # DEVIATION(MobileNet): Table 1 prints "Conv dw / s2" here, but the input-size column keeps
    # 7x7 (and the 7x7 average pool follows), so the stride is 1 as in the authors' TF-slim code.
    (1, 1024),
]


def _conv_bn_relu(cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(inplace=True),
        )
    )


class DepthwiseSeparable(nn.Sequential):
    """Fig. 3 (right): 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(
            OrderedDict(
                dw=_conv_bn_relu(cin, cin, 3, stride, groups=cin),
                pw=_conv_bn_relu(cin, cout, 1),
            )
        )


class MobileNetV1(nn.Module):
    def __init__(self, *, num_classes: int = 1000, width_mult: float = 1.0, in_chans: int = 3):
        super().__init__()
        # Sec. 3.3: the width multiplier alpha thins every layer uniformly
        ch = lambda c: max(1, int(c * width_mult))  # noqa: E731
        layers: list[tuple[str, nn.Module]] = [("conv1", _conv_bn_relu(in_chans, ch(32), 3, stride=2))]
        cin = ch(32)
        for i, (stride, cout) in enumerate(MOBILENET_V1_TABLE1, start=2):
            layers.append((f"conv{i}", DepthwiseSeparable(cin, ch(cout), stride)))
            cin = ch(cout)
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)  # "Avg Pool 7x7" at 224 input
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The paper gives no initialisation; He (fan-out) normal for convs as torchvision does for
        # its MobileNets; BN starts as identity.
        he_fan_out_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 3 x 224 x 224
        x = self.features.conv1(x)
        # N x 32 x 112 x 112
        x = self.features[1:2](x)
        # N x 64 x 112 x 112
        x = self.features[2:4](x)
        # N x 128 x 56 x 56
        x = self.features[4:6](x)
        # N x 256 x 28 x 28
        x = self.features[6:12](x)
        # N x 512 x 14 x 14
        x = self.features[12:](x)
        # N x 1024 x 7 x 7
        x = torch.flatten(self.pool(x), 1)
        # N x 1024
        return self.fc(x)
        # N x num_classes


@register_model(
    paper=MOBILENET_V1_PAPER,
    arxiv="1704.04861",
    year=2017,
    # the authors' TF-slim preprocessing scales pixels to [-1, 1]
    normalization="inception",
)
def mobilenet_v1(*, num_classes: int = 1000, **kwargs) -> MobileNetV1:
    return MobileNetV1(num_classes=num_classes, **kwargs)


@register_model(
    paper=MOBILENET_V2_PAPER,
    arxiv="1801.04381",
    year=2018,
    normalization="inception",
    implementation="torchvision:mobilenet_v2",
)
def mobilenet_v2(*, num_classes: int = 1000, **kwargs) -> nn.Module:
    # DEVIATION(MobileNetV2): torchvision puts dropout 0.2 before the classifier. The paper's text
    # names no dropout; the authors' TF-slim training scope uses keep_prob 0.8, i.e. the same.
    # The paper's final "conv2d 1x1, k" on a 1x1 map is torchvision's Linear (same function).
    return tv_mobilenetv2.MobileNetV2(num_classes=num_classes, **kwargs)


@register_converter("mobilenet_v2", "torchvision:mobilenet_v2")
def _mobilenet_v2_from_torchvision(state_dict):
    return dict(state_dict)  # the builder returns torchvision's module itself
