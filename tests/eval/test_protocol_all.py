"""`--protocol all`: every protocol a paper reports for the model, in one pass over the data, gives
each protocol the numbers a run of it alone gives (real JPEG shards, real loader workers, a real
Lightning validate, a tiny net), one record each."""

import json

import pytest
import torch
import yaml
from cli_helpers import QUIET, REPO, demo_shards, lightning_validate, run_cli

from cnnrepro.data.datamodule import ImageNetDataModule
from cnnrepro.eval import ProtocolError, build_protocol
from cnnrepro.eval.protocols import ProtocolSet, paper_protocols
from cnnrepro.lit.module import ClassifierModule
from cnnrepro.results.table import load_paper_numbers

PAPER = load_paper_numbers()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # 10 real validation JPEGs
    return str(demo_shards(tmp_path_factory, "protocol_all", val_per_class=1, samples_per_shard=6) / "shards")


def _model() -> ClassifierModule:
    torch.manual_seed(0)
    m = ClassifierModule(arch="squeezenet1_1", num_classes=10)
    # SqueezeNet's final conv is initialised at std 0.01 (logits ~1e-3 apart); scaled up, the
    # protocols' rankings differ from one another, so agreeing with each protocol alone means something
    final = m.model.classifier[1]
    with torch.no_grad():
        final.weight.mul_(1000.0)
        final.bias.mul_(1000.0)
    return m.eval()


def _validate(model, shards, protocol, batch_size):
    dm = ImageNetDataModule(root=shards, batch_size=batch_size, num_workers=1, resize=56, crop=48)
    return lightning_validate(model, dm, protocol)


SMALL = [  # every kind of protocol (crops, whole images, both) at sizes a 48-px net runs in a blink
    ("center", {}), ("flip", {}), ("tencrop", {}), ("tencrop", {"tencrop_variant": "fb"}),
    ("dense", {"scales": [48, 60]}), ("multiscale_fc", {"scales": [48, 64]}),
    ("multicrop144", {"scales": [48, 52, 56, 60]}), ("multicrop150+dense", {"scales": [48, 56, 64]}),
]


@pytest.mark.slow  # 1 + 8 validations of a 48-px SqueezeNet over 10 JPEGs
def test_one_pass_equals_each_protocol_alone(shards):
    model = _model()
    protos = [build_protocol(n, crop=48, resize=56, **kw) for n, kw in SMALL]
    # the set batches one image at a time (whole-image protocols in it), each protocol alone
    # batches its own way: the same top-1/top-5 and sample counts, the loss to float rounding
    together = _validate(model, shards, ProtocolSet(protos), batch_size=32)
    assert len(together) == len(SMALL)
    for (name, kw), got in zip(SMALL, together):
        alone = _validate(model, shards, build_protocol(name, crop=48, resize=56, **kw), batch_size=32)
        assert got["samples"] == alone["samples"] == 10, name
        assert (got["top1"], got["top5"]) == (alone["top1"], alone["top5"]), (name, kw)
        assert got["loss"] == pytest.approx(alone["loss"], rel=1e-5), (name, kw)
    assert len({(r["top1"], r["top5"], round(r["loss"], 4)) for r in together}) > 3  # the protocols did differ


def _paper_protocols(paper, arch, **kw):
    return paper_protocols(arch, paper=paper, **kw)


def test_the_papers_protocols_with_their_settings_once_each():
    vgg, skipped = _paper_protocols(PAPER, "vgg16", crop=224, resize=256)
    assert [(p.name, p.params["scales"]) for p in vgg.protocols] == [
        ("dense", [256]), ("dense", [384]), ("dense", [224, 256, 288]), ("dense", [352, 384, 416]),
        ("dense", [256, 384, 512]), ("multicrop150", [256, 384, 512]), ("multicrop150+dense", [256, 384, 512])]
    assert skipped == []  # Q=384 is reported for two training scales: one evaluation
    dn, _ = _paper_protocols(PAPER, "densenet121", crop=224, resize=256)
    assert [(p.name, p.params.get("variant")) for p in dn.protocols] == [("center", None), ("tencrop", "fb")]
    # the paper's own settings where its entry names them (ResNeXt: 224 of 256)
    (rx,), _ = [_paper_protocols(PAPER, "resnext50_32x4d", crop=200, resize=230)[0].protocols, None]
    assert (rx.params["crop"], rx.params["resize"]) == (224, 256)
    # the model variant decides: ResNet-34 option A has only a ten-crop number
    r34a, _ = _paper_protocols(PAPER, "resnet34", crop=224, resize=256, arch_kwargs={"shortcut": "A"})
    r34b, _ = _paper_protocols(PAPER, "resnet34", crop=224, resize=256)
    assert [p.name for p in r34a.protocols] == ["tencrop"] and [p.name for p in r34b.protocols] == [
        "tencrop", "multiscale_fc"]
    inc, skipped = _paper_protocols(PAPER, "inception_v3", crop=299, resize=342)
    assert [p.name for p in inc.protocols] == ["center"]
    assert len(skipped) == 1 and "multicrop144" in skipped[0] and "not stated" in skipped[0]  # said, not dropped
    with pytest.raises(ProtocolError, match="lists no protocol cnnrepro implements for squeezenet1_1"):
        _paper_protocols(PAPER, "squeezenet1_1", crop=224, resize=256)


# -- the command: one pass, one record per protocol, the same numbers as separate runs ----------------

def _run(args, cwd):
    return run_cli(args, cwd, timeout=900)


QUIET = [*QUIET, "--data.batch_size", "16"]


@pytest.mark.slow  # three real CLI runs of a 64-px DenseNet-121 over 10 JPEGs
def test_validate_protocol_all_writes_one_record_per_paper_protocol_equal_to_separate_runs(tmp_path, shards):
    recipe = tmp_path / "dn.yaml"
    # DenseNet's paper reports a centre crop and fb.resnet.torch's ten-crop (results/paper_numbers.yaml)
    recipe.write_text(yaml.safe_dump({"extends": str(REPO / "recipes" / "densenet121.yaml"),
                                      "data": {"resize": 72, "crop": 64}}))
    p = _run(["validate", str(recipe), "--data.root", shards, *QUIET, "--protocol", "all"], tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "--protocol all: densenet121: center 64/72; tencrop 64/72 fb (one pass, one record each)" in p.stderr
    folder = tmp_path / "runs" / "dn" / "validate-000"
    recs = [json.loads(f.read_text()) for f in sorted(folder.glob("protocols/*/record.json"))]
    assert [r["protocol"] for r in recs] == ["center", "tencrop"] and not (folder / "record.json").exists()
    for i, extra in enumerate([["--protocol", "center"], ["--protocol", "tencrop", "--protocol_tencrop_variant", "fb"]]):
        q = _run(["validate", str(recipe), "--data.root", shards, *QUIET, *extra], tmp_path)
        assert q.returncode == 0, q.stderr[-4000:]
        alone = json.loads((tmp_path / "runs" / "dn" / f"validate-00{i + 1}" / "record.json").read_text())
        for key in ("protocol", "protocol_params", "samples", "samples_expected", "top1", "top5"):
            assert recs[i][key] == alone[key], (extra, key)
        assert recs[i]["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-5)
    assert recs[0]["samples"] == 10
    # `cnnrepro table` reads both records below the run folder: one row per protocol
    t = _run(["table", str(folder), "--csv"], tmp_path)
    assert t.returncode == 0 and t.stdout.count("\ndensenet121,") == 2, t.stdout + t.stderr


@pytest.mark.slow
def test_protocol_all_refusals_are_one_line(tmp_path, shards):
    recipe = tmp_path / "sq.yaml"
    recipe.write_text(yaml.safe_dump({"extends": str(REPO / "recipes" / "base.yaml"),
                                      "model": {"arch": "squeezenet1_1"}, "data": {"resize": 72, "crop": 64}}))
    p = _run(["validate", str(recipe), "--data.root", shards, *QUIET, "--protocol", "all"], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "lists no protocol cnnrepro implements for squeezenet1_1" in p.stderr
    p = _run(["validate", str(recipe), "--data.root", shards, *QUIET, "--protocol", "all",
              "--protocol_scales", "[72]"], tmp_path)
    assert p.returncode == 2 and "--protocol_scales: --protocol all evaluates each protocol" in p.stderr
