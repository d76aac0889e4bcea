"""ReaL top-1 through a real Lightning validate (--data.real_labels): a tiny ILSVRC-2012-like val
set of real JPEGs named ILSVRC2012_val_NNNNNNNN, read in place and as shards, a real.json of 50,000
entries written here, and a reference computed here from the model's own predictions with the
formula of the reassessed-imagenet README (`pred in real_labels[i] ... if real_labels[i]`)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import lightning_validate

from cnnrepro.data.datamodule import DataConfigError, ImageNetDataModule
from cnnrepro.eval import build_protocol
from cnnrepro.eval.protocols import ProtocolSet
from cnnrepro.lit.module import ClassifierModule

REPO = Path(__file__).resolve().parents[2]

# the ILSVRC2012_val_ numbers of the ten images, out of order, first and last included
NUMBERS = [50_000, 17, 1, 4242, 3, 999, 25_000, 8, 31_337, 12]
MEAN = [120.0, 115.0, 100.0]


def build_ilsvrc_like(root):
    """root/tree: train/ with the 1000 class folders (empty: class index = sorted WNID position, as
    ILSVRC-2012), val/<wnid>/ILSVRC2012_val_N.JPEG for NUMBERS (real photos of the demo set);
    root/shards: the same converted by `cnnrepro shards`' writer."""
    from cnnrepro.data.demo import build_demo_tree
    from cnnrepro.data.shards import write_shards

    build_demo_tree(root / "demo", train_per_class=0, val_per_class=1)
    photos = sorted((root / "demo" / "val").rglob("*.JPEG"))
    tree = root / "tree"
    for i in range(1000):
        (tree / "train" / f"n{i:08d}").mkdir(parents=True)
    for k, (n, photo) in enumerate(zip(NUMBERS, photos)):
        d = tree / "val" / f"n{(97 * k) % 1000:08d}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, d / f"ILSVRC2012_val_{n:08d}.JPEG")
    with pytest.warns(UserWarning):  # the empty classes are listed, and said so
        write_shards(tree, root / "shards", samples_per_shard=4, workers=1, progress=False)
    return tree, root / "shards"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_ilsvrc_like(tmp_path_factory.mktemp("real"))


def model_1000() -> ClassifierModule:
    torch.manual_seed(0)
    m = ClassifierModule(arch="squeezenet1_1", num_classes=1000)
    final = m.model.classifier[1]  # scaled up: predictions that differ from image to image
    with torch.no_grad():
        final.weight.mul_(1000.0)
        final.bias.mul_(1000.0)
    return m.eval()


def reference_predictions(model, tree, protocol, normalize) -> dict[int, int]:
    """{file number: top-1}, one image at a time: its file, the protocol's views, the protocol's ranking."""
    preds = {}
    with torch.no_grad():
        for f in (tree / "val").rglob("*.JPEG"):
            x = protocol.transform(f.read_bytes())[None]  # 1 x views x 3 x H x W, uint8
            logp = protocol.predict(model.model, normalize(x.flatten(0, 1), train=False).view(x.shape))
            preds[int(f.stem[-8:])] = int(logp.argmax(1))
    return preds


def write_real_for(path, preds: dict[int, int]) -> list[list[int]]:
    """real.json: most entries irrelevant; of ours, some hold the prediction (alone or among others),
    some do not, some are empty (left out of ReaL accuracy)."""
    data = [[(i * 7) % 1000] for i in range(50_000)]
    for k, n in enumerate(NUMBERS):
        p = preds[n]
        data[n - 1] = [[p], [(p + 1) % 1000], [], [(p + 3) % 1000, p, (p + 5) % 1000]][k % 4]
    path.write_text(json.dumps(data))
    return data


def readme_real_top1(preds: dict[int, int], real: list[list[int]]) -> tuple[float, int]:
    hits = [preds[n] in real[n - 1] for n in NUMBERS if real[n - 1]]
    return 100.0 * sum(hits) / len(hits), len(hits)


@pytest.mark.slow  # four Lightning validations of a 48-px SqueezeNet over 10 JPEGs
@pytest.mark.parametrize("form", ["tree", "shards"])
def test_real_top1_equals_the_readme_formula_on_the_models_own_predictions(data, tmp_path, form):
    tree, shards = data
    model = model_1000()
    center, flip = build_protocol("center", crop=48, resize=56), build_protocol("flip", crop=48, resize=56)
    dm0 = ImageNetDataModule(root=str(tree), batch_size=3, num_workers=0, resize=56, crop=48, mean=MEAN)
    preds = {p.name: reference_predictions(model, tree, p, dm0.normalize) for p in (center, flip)}
    real = write_real_for(tmp_path / "real.json", preds["center"])
    want, labelled = readme_real_top1(preds["center"], real)
    assert labelled == 8 and 0 < want < 100  # two empty lists left out; hits and misses

    root = tree if form == "tree" else shards
    dm = ImageNetDataModule(root=str(root), batch_size=3, num_workers=1, resize=56, crop=48, mean=MEAN,
                            real_labels=str(tmp_path / "real.json"))
    got = lightning_validate(model, dm, center)
    assert got["samples"] == 10 and got["real_samples"] == labelled
    assert got["real_top1"] == pytest.approx(want, abs=1e-9)
    # `--protocol all`: each protocol ranks its own views and is scored on its own top-1
    both = lightning_validate(model, dm, ProtocolSet([center, flip]))
    for res, name in zip(both, ("center", "flip")):
        ref, n = readme_real_top1(preds[name], real)
        assert res["real_samples"] == n and res["real_top1"] == pytest.approx(ref, abs=1e-9), name


def test_real_labels_refuse_data_that_is_not_ilsvrc_val(data, tmp_path):
    tree, _ = data
    real = tmp_path / "real.json"
    real.write_text(json.dumps([[1]] * 50_000))
    demo = tree.parent / "demo"  # 10 classes: not ILSVRC-2012's 1000
    with pytest.raises(DataConfigError, match="10 classes") as e:
        ImageNetDataModule(root=str(demo), batch_size=3, num_workers=0, resize=56, crop=48, mean=MEAN,
                           real_labels=str(real))
    assert "\n" not in str(e.value)
    dm = ImageNetDataModule(root=str(tree), batch_size=3, num_workers=0, resize=56, crop=48, mean=MEAN,
                            real_labels=str(real))
    with pytest.raises(DataConfigError, match="validate"):
        dm.setup("fit")


def test_fit_with_real_labels_is_refused_before_a_run_folder_is_made(tmp_path, monkeypatch, capsys):
    from cnnrepro.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["fit", str(REPO / "recipes" / "alexnet.yaml"), "--data.root", str(tmp_path / "nothing"),
                 "--data.real_labels", str(tmp_path / "real.json"), "--run.wandb", "disabled"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--data.real_labels applies to `cnnrepro validate`" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
