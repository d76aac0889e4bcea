"""``--weights``: library and file weights into our models, their provenance, and the library's
own preprocessing, bit for bit. Nothing is downloaded: the weight files are the libraries' own
randomly initialised models, saved here in each format or into fake library caches.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from cnnrepro.data.stream import EvalStream, ShardInfo
from cnnrepro.eval.protocols import Protocol
from cnnrepro.lit.weights import (LibraryEvalViews, WeightsError, WeightsNormalize, library_preprocessing,
                                  load_weights)
from cnnrepro.models import create_model

# (our model, library model, input size here, the library's input size): converters of models/interop.py
CASES = [("resnet18", "torchvision:resnet18", 64, 224), ("alexnet_owt", "torchvision:alexnet", 224, 224),
         ("xception", "timm:legacy_xception", 299, 299)]


def _library_model(source: str, num_classes: int = 1000) -> nn.Module:
    lib, name = source.split(":")
    torch.manual_seed(0)
    m = (torchvision.models.get_model(name, weights=None, num_classes=num_classes) if lib == "torchvision"
         else timm.create_model(name, pretrained=False, num_classes=num_classes))
    for mod in m.modules():  # non-trivial BN statistics, so that BN placement is exercised
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _save(sd: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("arch,source,size,lib_size", CASES)
def test_a_library_weight_file_gives_the_library_models_logits(tmp_path, arch, source, size, lib_size, suffix):
    lib = _library_model(source)
    path = _save(lib.state_dict(), tmp_path / f"w{suffix}")
    ours = create_model(arch).eval()
    loaded = load_weights(ours, arch, str(path))
    assert loaded.converter == source and loaded.sha256 == _sha(path)
    rec = loaded.record("protocol:center")
    check = rec.pop("check")
    assert rec == {"spec": str(path), "source": {"file": str(path.resolve())}, "sha256": _sha(path),
                   "converter": source, "preprocessing": "protocol:center"}
    # checked at the library's own input size (its default weights' metadata)
    assert check["input"] == [2, 3, lib_size, lib_size] and check["max_abs_diff"] <= 1e-3 * max(1, check["max_abs_logit"])
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=1e-5)


def test_a_lightning_checkpoint_is_our_own_weights(tmp_path):
    import pytorch_lightning as pl

    from cnnrepro.lit.module import ClassifierModule

    torch.manual_seed(1)
    module = ClassifierModule(arch="resnet18", num_classes=10)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(module)
    module.trainer = trainer
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    ours = create_model("resnet18", num_classes=10).eval()
    loaded = load_weights(ours, "resnet18", str(tmp_path / "run.ckpt"))
    assert loaded.converter == "cnnrepro checkpoint" and loaded.preprocessing is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), module.model.eval()(x), rtol=0, atol=0)
    with pytest.raises(WeightsError, match=r"a checkpoint of 'resnet18', this run's model is 'resnet34'"):
        load_weights(create_model("resnet34", num_classes=10), "resnet34", str(tmp_path / "run.ckpt"))


def test_a_file_that_does_not_fit_names_the_first_tensor_and_the_converter(tmp_path):
    path = _save(_library_model("torchvision:resnet18", num_classes=10).state_dict(), tmp_path / "ten.pth")
    with pytest.raises(WeightsError) as e:
        load_weights(create_model("resnet18"), "resnet18", str(path))
    assert str(e.value) == (f"--weights {path} does not fit resnet18: converter torchvision:resnet18: first "
                            f"mismatching tensor fc.weight (expected (1000, 512), got (10, 512))")
    # another family's file: the converter tried says what it missed
    path = _save(_library_model("timm:mobilenetv1_100").state_dict(), tmp_path / "mobilenet.safetensors")
    with pytest.raises(WeightsError, match=r"converter torchvision:resnet18: first mismatching tensor "
                                           r"conv1\.weight \(expected \(64, 3, 7, 7\), got no such tensor\)"):
        load_weights(create_model("resnet18"), "resnet18", str(path))
    with pytest.raises(WeightsError, match=r"converter torchvision:alexnet: KeyError: conv1"):
        load_weights(create_model("alexnet_owt"), "alexnet_owt", str(tmp_path / "ten.pth"))
    # torchvision's resnet50 is v1.5: no converter into the paper's v1, whatever the file
    with pytest.raises(WeightsError, match="no converter into 'resnet50'"):
        load_weights(create_model("resnet50"), "resnet50", str(path))


# -- the libraries' caches ----------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_torchvision_weights_come_from_torch_hubs_cache(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = "torchvision:resnet18:IMAGENET1K_V1"
    w = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(w.url)
    with pytest.raises(WeightsError) as e:
        load_weights(create_model("resnet18"), "resnet18", spec)
    assert str(e.value) == (f"--weights {spec}: ResNet18_Weights.IMAGENET1K_V1 is not in torch.hub's cache (looked "
                            f"for {cached}); pass --allow-download to let torchvision download it, or place the "
                            f"file there (TORCH_HOME sets the cache)")
    lib = _library_model("torchvision:resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(lib.state_dict(), cached)
    ours = create_model("resnet18").eval()
    loaded = load_weights(ours, "resnet18", spec)
    assert loaded.converter == "torchvision:resnet18" and loaded.sha256 == _sha(cached)
    assert loaded.source == {"library": "torchvision", "name": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1",
                             "url": w.url, "file": str(cached)}
    assert loaded.preprocessing.params == {"weights": "ResNet18_Weights.IMAGENET1K_V1", "resize": 256, "crop": 224,
                                           "interpolation": "bilinear", "antialias": True,
                                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=1e-5)
    # no enum: torchvision's DEFAULT (IMAGENET1K_V1 for resnet18), from the same cached file
    assert load_weights(create_model("resnet18"), "resnet18", "torchvision:resnet18").sha256 == _sha(cached)
    with pytest.raises(WeightsError, match="ResNet18_Weights has no 'IMAGENET9K'; it has IMAGENET1K_V1"):
        load_weights(create_model("resnet18"), "resnet18", "torchvision:resnet18:IMAGENET9K")
    # torchvision's ResNet-50 is v1.5: refused by the paper's v1 before anything is read
    with pytest.raises(WeightsError, match=r"no converter from torchvision:resnet50 into 'resnet50' \(into it: "
                                           r"none\); torchvision:resnet50's weights go into resnet50_v1_5: use"):
        load_weights(create_model("resnet50"), "resnet50", "torchvision:resnet50:IMAGENET1K_V1")


@pytest.mark.slow  # ResNeXt-101 built twice
def test_timm_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = "timm:resnext101_32x4d.gluon_in1k"
    with pytest.raises(WeightsError, match=r"is not cached \(looked in the Hugging Face cache \(HF_HOME\) for "
                                           r"timm/resnext101_32x4d.gluon_in1k .*--allow-download"):
        load_weights(create_model("resnext101_32x4d"), "resnext101_32x4d", spec)
    # the hub's cache layout: refs/main names the snapshot holding the file
    repo = tmp_path / "hf" / "models--timm--resnext101_32x4d.gluon_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    lib = _library_model("timm:resnext101_32x4d")
    cached = _save(lib.state_dict(), snapshot / "model.safetensors")
    ours = create_model("resnext101_32x4d").eval()
    loaded = load_weights(ours, "resnext101_32x4d", spec)
    assert loaded.converter == "timm:resnext101_32x4d" and loaded.sha256 == _sha(cached)
    assert loaded.source["file"] == str(cached) and loaded.source["weights"] == "resnext101_32x4d.gluon_in1k"
    assert loaded.check["input"] == [2, 3, 224, 224]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), lib(x), rtol=0, atol=1e-5)


def test_timm_weights_named_by_url_come_from_torch_hubs_cache(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = "timm:legacy_xception.tf_in1k"
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "xception-43020ad28.pth"
    with pytest.raises(WeightsError, match=f"looked in {cached}\\); pass --allow-download"):
        load_weights(create_model("xception"), "xception", spec)
    cached.parent.mkdir(parents=True)
    torch.save(_library_model("timm:legacy_xception").state_dict(), cached)
    loaded = load_weights(create_model("xception"), "xception", spec)
    assert loaded.sha256 == _sha(cached) and loaded.converter == "timm:legacy_xception"
    assert loaded.preprocessing.desc == ("timm:legacy_xception.tf_in1k resize 333 bicubic, crop 299, "
                                         "crop_mode center, mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]")


def test_a_converter_of_another_function_is_refused(tmp_path, monkeypatch):
    # timm's mobilenetv1_100 has our MobileNet's tensors, in our order, but ReLU6 where the paper
    # (and our model) has ReLU: with the tensors loaded the logits differ, so its weights are not
    # evaluated. (models/mobilenet.py registers no such converter, for that reason: one is put in here.)
    from cnnrepro.models import interop

    ours = list(create_model("mobilenet_v1").state_dict())
    monkeypatch.setitem(interop._CONVERTERS, ("mobilenet_v1", "timm:mobilenetv1_100"),
                        lambda sd: dict(zip(ours, sd.values())))
    path = _save(_library_model("timm:mobilenetv1_100").state_dict(), tmp_path / "mnv1.pth")
    with pytest.raises(WeightsError, match=r"converter timm:mobilenetv1_100 loads these tensors, but the model then "
                                           r"computes another function .* on a random 2x3x224x224 input"):
        load_weights(create_model("mobilenet_v1"), "mobilenet_v1", str(path))


# -- the library's preprocessing, bit for bit, on real JPEGs -----------------------------------------

# odd sizes, shorter sides >= 512, portrait and landscape, a grayscale JPEG (camera)
SIZES = [("chelsea", 333, 257), ("rocket", 641, 513), ("astronaut", 517, 1031), ("stereo_motorcycle", 1023, 767),
         ("hubble_deep_field", 257, 333), ("camera", 389, 311), ("coffee", 601, 599)]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    import skimage.data

    root = tmp_path_factory.mktemp("weights_jpegs")
    out = []
    for i, (name, w, h) in enumerate(SIZES):
        a = getattr(skimage.data, name)()
        a = a[0] if isinstance(a, tuple) else a
        p = root / f"{i:02d}_{name}_{w}x{h}.JPEG"
        Image.fromarray(np.asarray(a)).resize((w, h), Image.BICUBIC).save(p, format="JPEG", quality=90)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def shards(jpegs, tmp_path_factory) -> list[ShardInfo]:
    import webdataset as wds

    root = tmp_path_factory.mktemp("weights_shards")
    out = []
    for k, chunk in enumerate((jpegs[:4], jpegs[4:])):
        path = root / f"val-{k:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for p in chunk:
                sink.write({"__key__": p.stem, "jpg": p.read_bytes(), "cls": str(jpegs.index(p))})
        out.append(ShardInfo(str(path), len(chunk)))
    return out


@pytest.mark.slow  # ~40 s each on 2 shared cores: loader workers, two models at 224-299 px
@pytest.mark.parametrize("arch,spec", [
    ("resnet18", "torchvision:resnet18:IMAGENET1K_V1"),  # bilinear, 256 -> 224
    ("resnet50_v1_5", "torchvision:resnet50:IMAGENET1K_V2"),  # bilinear, 232 -> 224
    ("xception", "timm:legacy_xception.tf_in1k"),  # bicubic, 333 -> 299, mean 0.5
])
def test_library_preprocessing_is_the_librarys_bit_for_bit(jpegs, shards, arch, spec):
    pre = library_preprocessing(spec)
    lib = _library_model(spec.split(".")[0] if spec.startswith("timm") else ":".join(spec.split(":")[:2]))
    ours = create_model(arch).eval()
    load_weights(ours, arch, str(_save(lib.state_dict(), Path(shards[0].url).with_name(f"{arch}.pth"))))
    # ours: the shards through the loader workers, the device-side step, the protocol's ranking
    proto = Protocol("center", LibraryEvalViews(pre.transform), {}, 1)
    norm = WeightsNormalize(pre.params["mean"], pre.params["std"])
    xs, scores, idx = [], [], []
    ds = EvalStream(shards, batch_size=3, transform=proto.transform, rank=0, world_size=1, num_workers=2)
    for x, y, i in DataLoader(ds, batch_size=None, num_workers=2):
        x = norm(x)
        xs += list(x[:, 0])
        scores.append(proto.predict(ours, x))
        idx.append(i)
    order = torch.cat(idx).argsort().tolist()
    assert sorted(torch.cat(idx).tolist()) == list(range(len(jpegs)))  # every image exactly once
    scores = torch.cat(scores)[order]
    for n, path in enumerate(jpegs):
        # the reference: the library's transform on its own loader's PIL image, the library's model
        with open(path, "rb") as f:
            want = pre.transform(Image.open(f).convert("RGB"))
        assert torch.equal(xs[order[n]], want), path.name
        with torch.no_grad():
            logits = lib(want[None])
        torch.testing.assert_close(ours(want[None]), logits, rtol=0, atol=1e-5)
        assert scores[n].topk(5).indices.tolist() == logits[0].topk(5).indices.tolist(), path.name


def test_protocol_views_get_the_librarys_normalisation_arithmetic():
    # (x / 255 - m) / s exactly as torchvision's transforms compute it, on a batch of uint8 views
    x = torch.randint(0, 256, (2, 10, 3, 5, 7), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    want = torchvision.transforms.Normalize(mean, std)(torchvision.transforms.ConvertImageDtype(torch.float)(x))
    assert torch.equal(WeightsNormalize(mean, std)(x), want)
