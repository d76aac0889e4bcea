"""The registry as a whole: every SCOPE.md name is there, with its metadata, and the CLI lists it."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnrepro.models import list_models, model_info

# The registry names of ../shared/SCOPE.md (the public API), spelled out so the test runs
# without the shared folder; `…` ranges in SCOPE are listed in full.
SCOPE_NAMES = """
lenet5 ciresan_mlp alexnet alexnet_owt zfnet overfeat_fast overfeat_accurate
vgg11 vgg11_lrn vgg13 vgg16_c vgg16 vgg19 vgg11_bn vgg13_bn vgg16_c_bn vgg16_bn vgg19_bn
nin googlenet bn_inception inception_v3 inception_v4 inception_resnet_v1 inception_resnet_v2
resnet18 resnet34 resnet50 resnet101 resnet152 resnet50_v1_5 resnet101_v1_5 resnet152_v1_5
preact_resnet50 preact_resnet101 preact_resnet152 preact_resnet200
resnext50_32x4d resnext101_32x4d wide_resnet50_2 xception squeezenet1_0 squeezenet1_1
mobilenet_v1 mobilenet_v2 densenet121 densenet169 densenet201 densenet161
se_resnet50 se_resnext50_32x4d shufflenet_v1_g3 shufflenet_v2_x1_0 efficientnet_b0
res2net50_26w_4s fractalnet34 enet
""".split()

SCOPE_MD = Path(__file__).resolve().parents[3] / "shared" / "SCOPE.md"


def test_every_scope_name_is_registered():
    missing = sorted(set(SCOPE_NAMES) - set(list_models()))
    assert not missing, missing


@pytest.mark.skipif(not SCOPE_MD.exists(), reason="shared/SCOPE.md is not beside this checkout")
def test_scope_md_names_are_all_registered():
    table = SCOPE_MD.read_text().split("## Recipes")[0]
    names = {n for n in re.findall(r"`([a-z][a-z0-9_]*)`", table)}
    assert names - set(list_models()) == set()


@pytest.mark.parametrize("name", sorted(SCOPE_NAMES))
def test_metadata_is_complete(name):
    info = model_info(name)
    assert info.paper and 1989 <= info.year <= 2019
    assert info.arxiv is None or re.fullmatch(r"\d{4}\.\d{4,5}", info.arxiv)
    assert len(info.input_size) == 3 and info.input_size[1] >= 28
    assert info.normalization in {"mean_rgb", "imagenet", "inception", "mnist"}
    assert info.implementation == "ours" or info.implementation.split(":")[0] in {"torchvision", "timm"}


def test_models_command_lists_the_registry_as_json():
    exe = str(Path(sys.executable).with_name("cnnrepro"))
    p = subprocess.run([exe, "models", "vgg1*", "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    by = {r["name"]: r for r in rows}
    assert set(by) == {"vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg16_c",
                       "vgg16_c_bn", "vgg19", "vgg19_bn"}
    assert by["vgg16"]["params"] == 138_357_544  # paper Table 2: 138M; torchvision vgg16 exactly
    assert by["vgg16"]["gmacs"] == pytest.approx(15.47, abs=0.01)  # conv+FC MACs at 224


def test_importing_the_zoo_builds_no_layer():
    # every `cnnrepro` command imports the registry: a family that builds layers at import time
    # makes each of them wait (VGG's weight converters built eight 100M-parameter heads: 4 s)
    code = ("import torch.nn as nn\n"
            "built = []\n"
            "init = nn.Module.__init__\n"
            "def counting(self, *a, **k):\n"
            "    built.append(type(self).__name__)\n"
            "    init(self, *a, **k)\n"
            "nn.Module.__init__ = counting\n"
            "import cnnrepro.models, cnnrepro.lit.cli\n"
            "print(len(built), sorted(set(built)))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[0] == "0", p.stdout
