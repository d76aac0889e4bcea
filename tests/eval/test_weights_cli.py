"""`cnnrepro validate --weights` end to end: the real console script on real shards of real JPEGs.

The reference is the library itself: torchvision's model with the same tensors and its weights'
own transforms on each validation JPEG, read with PIL from the tree the shards were written from.
"""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from cli_helpers import QUIET, REPO, demo_shards, run_cli

RESNET18 = str(REPO / "recipes" / "resnet18.yaml")
TV18 = "torchvision:resnet18:IMAGENET1K_V1"


def run(args, cwd, torch_home):
    return run_cli(args, cwd, env_extra={"TORCH_HOME": str(torch_home)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return demo_shards(tmp_path_factory, "weights_cli", val_per_class=2, samples_per_shard=8)  # 20 val JPEGs


def _reference(lib: torch.nn.Module, data: Path) -> tuple[float, float, int]:
    """top-1/top-5 (%) and count of the library's model + its weights' transforms on the val JPEGs."""
    classes = [c["wnid"] for c in json.loads((data / "shards" / "manifest.json").read_text())["classes"]]
    t = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    hit1 = hit5 = n = 0
    for label, wnid in enumerate(classes):
        for path in sorted((data / "tree" / "val" / wnid).glob("*.JPEG")):
            with open(path, "rb") as f:
                x = t(Image.open(f).convert("RGB"))
            with torch.no_grad():
                top5 = lib(x[None])[0].topk(5).indices.tolist()
            hit1 += top5[0] == label
            hit5 += label in top5
            n += 1
    return 100.0 * hit1 / n, 100.0 * hit5 / n, n


@pytest.mark.slow  # two real CLI runs, ~20 s each on 2 shared cores
def test_validate_weights_file_with_the_librarys_preprocessing(tmp_path, data):
    torch.manual_seed(3)
    lib = torchvision.models.resnet18(num_classes=10).eval()  # the demo data has 10 classes
    torch.save(lib.state_dict(), tmp_path / "tv18.pth")
    p = run(["validate", RESNET18, "--data.root", str(data / "shards"), "--data.batch_size", "8", *QUIET,
             "--weights", str(tmp_path / "tv18.pth"), "--weights_preprocessing", TV18], tmp_path, tmp_path / "torch")
    assert p.returncode == 0, p.stderr[-4000:]
    rec = json.loads((tmp_path / "runs" / "resnet18" / "validate-000" / "record.json").read_text())
    w = rec["weights"]
    assert w["spec"] == str(tmp_path / "tv18.pth") and w["converter"] == "torchvision:resnet18"
    assert w["source"] == {"file": str((tmp_path / "tv18.pth").resolve())}
    import hashlib

    assert w["sha256"] == hashlib.sha256((tmp_path / "tv18.pth").read_bytes()).hexdigest()
    assert w["preprocessing"] == ("library:torchvision:ResNet18_Weights.IMAGENET1K_V1 resize 256 bilinear, crop 224, "
                                  "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]")
    top1, top5, n = _reference(lib, data)
    assert (rec["top1"], rec["top5"], rec["samples"]) == (round(top1, 4), round(top5, 4), n) and n == 20
    assert rec["protocol"] == "center" and rec["ckpt_path"] is None

    # a paper protocol prescribes its pixels; the weights keep the library's mean/std
    p = run(["validate", RESNET18, "--data.root", str(data / "shards"), "--data.batch_size", "20", *QUIET,
             "--weights", str(tmp_path / "tv18.pth"), "--weights_preprocessing", TV18, "--protocol", "tencrop"],
            tmp_path, tmp_path / "torch")
    assert p.returncode == 0, p.stderr[-4000:]
    rec = json.loads((tmp_path / "runs" / "resnet18" / "validate-001" / "record.json").read_text())
    assert rec["weights"]["preprocessing"] == "protocol:tencrop" and rec["samples"] == 20


@pytest.mark.slow
def test_validate_library_weights_from_the_cache_only(tmp_path, data):
    home = tmp_path / "torch"
    args = ["validate", RESNET18, "--data.root", str(data / "shards"), *QUIET, "--weights", TV18]
    p = run(args, tmp_path, home)
    cached = home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert f"looked for {cached}); pass --allow-download" in p.stderr.strip().splitlines()[-1]
    # in the cache (no network): read, but the released head has 1000 classes, the data 10
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    p = run(args, tmp_path, home)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].endswith(
        f"--weights {TV18} does not fit resnet18: converter torchvision:resnet18: first mismatching tensor fc.weight "
        f"(expected (10, 512), got (1000, 512))")


@pytest.mark.slow
def test_weights_flags_belong_to_validate_and_test(tmp_path, data):
    p = run(["fit", RESNET18, "--data.root", str(data / "shards"), *QUIET, "--weights", TV18], tmp_path, tmp_path)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "--weights/--allow-download/--weights_preprocessing apply to `cnnrepro validate`" in p.stderr
    p = run(["validate", RESNET18, "--data.root", str(data / "shards"), *QUIET, "--allow-download"], tmp_path, tmp_path)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].endswith("--allow-download/--weights_preprocessing go with --weights SPEC")
