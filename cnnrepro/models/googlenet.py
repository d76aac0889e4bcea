"""GoogLeNet (Inception-v1).

Szegedy et al., "Going Deeper with Convolutions", arXiv:1409.4842 (CVPR 2015).

Architecture (paper Table 1 and Fig. 3), at 224x224 input. Inception columns are the paper's:
#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj (the pool branch is a 3x3/1 max-pool).

    type            patch/stride  output       #1x1 #3x3r #3x3 #5x5r #5x5 proj  params  ops
    convolution     7x7/2         112x112x64                                    2.7K*   34M*
    max pool        3x3/2         56x56x64
    (LRN)                                                         -- Fig. 3, not in Table 1
    convolution     3x3/1         56x56x192          64   192                   112K    360M
    (LRN)                                                         -- Fig. 3, not in Table 1
    max pool        3x3/2         28x28x192
    inception (3a)                28x28x256    64    96   128   16   32   32    159K    128M
    inception (3b)                28x28x480   128   128   192   32   96   64    380K    304M
    max pool        3x3/2         14x14x480
    inception (4a)                14x14x512   192    96   208   16   48   64    364K    73M
    inception (4b)                14x14x512   160   112   224   24   64   64    437K    88M
    inception (4c)                14x14x512   128   128   256   24   64   64    463K    100M
    inception (4d)                14x14x528   112   144   288   32   64   64    580K    119M
    inception (4e)                14x14x832   256   160   320   32  128  128    840K    170M
    max pool        3x3/2         7x7x832
    inception (5a)                7x7x832     256   160   320   32  128  128    1072K   54M
    inception (5b)                7x7x1024    384   192   384   48  128  128    1388K   71M
    avg pool        7x7/1         1x1x1024
    dropout (40%)                 1x1x1024
    linear                        1x1x1000                                      1000K   1M

The table's "params" count weights only (no biases) in units of 1024, "ops" are multiply-adds
in units of 10^6. Built from the filter columns, the ops column is reproduced to its rounding in
every row but conv1 and 5a, and the params column is off by up to 7% in several rows (4c, 5a);
the rows marked * are inconsistent with a 7x7x3x64 convolution (9,408 weights, 118M MACs). The
tests in tests/models/test_googlenet.py spell this out row by row.

Auxiliary classifiers (Sec. 5), on top of 4a and 4d, used in training only, their losses
weighted by 0.3: 5x5/3 average pooling (4x4x512 / 4x4x528), 1x1 conv with 128 filters + ReLU,
FC 1024 + ReLU, dropout 70%, linear classifier.

Not in the paper (trained with DistBelief): the LRN constants and the initialisation. We take
both from the BVLC Caffe reproduction (models/bvlc_googlenet): LRN size 5, alpha 1e-4,
beta 0.75, k 1; "xavier" weights (uniform, variance 1/fan_in) and bias 0.2, bias 0 on the
classifiers. Max-pools round up (Caffe's ceil mode), which gives Table 1's 56/28/14/7 grids.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._lrn import LocalResponseNorm
from .registry import register_model

__all__ = ["GoogLeNet", "Inception", "googlenet", "GOOGLENET_TABLE"]

GOOGLENET_PAPER = "Szegedy et al. 2014, Going Deeper with Convolutions"

# Table 1, inception rows: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
GOOGLENET_TABLE: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# Table 1: a 3x3/2 max-pool after these modules
_POOL_AFTER = {"3b", "4e"}
# Sec. 5: auxiliary classifiers on top of these modules
_AUX_AFTER = ("4a", "4d")


def _conv_relu(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    # Sec. 5: "All the convolutions, including those inside the Inception modules, use
    # rectified linear activation." No batch normalisation (it came a year later).
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding),
            relu=nn.ReLU(inplace=True),
        )
    )


def _lrn() -> LocalResponseNorm:
    # Constants from BVLC's Caffe GoogLeNet (the paper gives none); Caffe's alpha is already
    # divided by the window size, as torch's is, so the values carry over unchanged.
    return LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """Fig. 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated."""

    def __init__(self, in_ch: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = _conv_relu(in_ch, n1x1, 1)
        self.branch2 = nn.Sequential(_conv_relu(in_ch, n3x3red, 1), _conv_relu(n3x3red, n3x3, 3, padding=1))
        # a true 5x5, as in the paper (torchvision uses a 3x3 here, pytorch/vision#906)
        self.branch3 = nn.Sequential(_conv_relu(in_ch, n5x5red, 1), _conv_relu(n5x5red, n5x5, 5, padding=2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), _conv_relu(in_ch, pool_proj, 1)
        )
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxHead(nn.Module):
    """Sec. 5: the auxiliary classifier on top of 4a / 4d."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=5, stride=3)  # 14x14 -> 4x4
        self.conv = _conv_relu(in_ch, 128, 1)
        self.fc = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 512 (4a) or 528 (4d) x 14 x 14
        x = self.conv(self.pool(x))
        # N x 128 x 4 x 4
        x = self.dropout(self.relu(self.fc(torch.flatten(x, 1))))
        # N x 1024
        return self.classifier(x)


class GoogLeNet(nn.Module):
    """Table 1 / Fig. 3. In training mode ``forward`` returns ``(main, aux_4a, aux_4d)``.

    The auxiliary heads' FC layer expects the 4x4 grid of a 224x224 input (Sec. 5), so training
    mode needs the paper's input size; eval mode runs at any size from about 32x32.
    """

    # Sec. 5: "their loss gets added to the total loss of the network with a discount weight
    # (the losses of the auxiliary classifiers were weighted by 0.3)"
    aux_loss_weights: tuple[float, ...] = (0.3, 0.3)

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
        aux_logits: bool = True,
        in_chans: int = 3,
    ):
        super().__init__()
        self.aux_logits = aux_logits
        if not aux_logits:
            self.aux_loss_weights = ()
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=_conv_relu(in_chans, 64, 7, stride=2, padding=3),
                pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
                norm1=_lrn(),  # Fig. 3: LocalRespNorm after the first max-pool
                conv2_reduce=_conv_relu(64, 64, 1),
                conv2=_conv_relu(64, 192, 3, padding=1),
                norm2=_lrn(),  # Fig. 3: LocalRespNorm after conv2 3x3, before the max-pool
                pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
            )
        )
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        aux: OrderedDict[str, nn.Module] = OrderedDict()
        ch = 192
        for label, cols in GOOGLENET_TABLE.items():
            block = Inception(ch, *cols)
            blocks[f"inception{label}"] = block
            ch = block.out_channels
            if label in _POOL_AFTER:
                blocks[f"pool{label[0]}"] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            if aux_logits and label in _AUX_AFTER:
                aux[f"inception{label}"] = AuxHead(ch, num_classes, aux_dropout)
        self.blocks = nn.Sequential(blocks)
        self.aux = nn.ModuleDict(aux)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # Table 1: 7x7/1 average pool at 224 input
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Not in the paper (DistBelief). BVLC Caffe GoogLeNet: "xavier" filler (uniform with
        # variance 1/fan_in, i.e. kaiming_uniform with gain 1) and bias 0.2 so the ReLUs start
        # active; the classifier layers get bias 0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=1.0)
                nn.init.constant_(m.bias, 0.2)
        for m in [self.fc, *(h.classifier for h in self.aux.values())]:
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        # N x 3 x 224 x 224
        x = self.stem(x)
        # N x 192 x 28 x 28
        aux_out = []
        for name, layer in self.blocks.named_children():
            x = layer(x)
            # 3b: N x 480 x 28 x 28; 4a: N x 512 x 14 x 14; 4d: N x 528 x 14 x 14;
            # 4e: N x 832 x 14 x 14; 5b: N x 1024 x 7 x 7
            if self.training and name in self.aux:
                aux_out.append(self.aux[name](x))
        x = torch.flatten(self.avgpool(x), 1)
        # N x 1024
        x = self.fc(self.dropout(x))
        # N x num_classes
        if self.training and aux_out:
            return (x, *aux_out)
        return x


@register_model(
    paper=GOOGLENET_PAPER,
    arxiv="1409.4842",
    year=2014,
    input_size=(3, 224, 224),
    # the paper does not say; the BVLC Caffe reproduction subtracts the training-set mean
    normalization="mean_rgb",
)
def googlenet(*, num_classes: int = 1000, **kwargs) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, **kwargs)
