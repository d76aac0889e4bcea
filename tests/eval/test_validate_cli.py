"""`cnnrepro validate --protocol` end to end: the real console script on real shards."""

import json

import pytest

from cli_helpers import QUIET, REPO, demo_shards
from cli_helpers import run_cli as run

ALEXNET = str(REPO / "recipes" / "alexnet.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # 10 real validation JPEGs
    return str(demo_shards(tmp_path_factory, "validate", val_per_class=1, samples_per_shard=4) / "shards")


@pytest.mark.slow
@pytest.mark.parametrize("protocol,extra,views", [
    ("tencrop", [], 10),
    ("tencrop", ["--protocol_tencrop_variant", "fb"], 10),
    ("dense", ["--protocol_scales", "[256,288]"], None),
    ("multiscale_fc", ["--protocol_scales", "[227,256]"], None),
])
def test_validate_records_the_protocol_and_counts_every_image_once(tmp_path, shards, protocol, extra, views):
    p = run(["validate", ALEXNET, "--data.root", shards, "--data.batch_size", "20", *QUIET,
             "--protocol", protocol, *extra], tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    rec = json.loads((tmp_path / "runs" / "alexnet" / "validate-000" / "record.json").read_text())
    assert rec["protocol"] == protocol and rec["samples"] == rec["samples_expected"] == 10
    params = rec["protocol_params"]
    # the record states the pixel pipeline: full-size decoding unless --protocol_reduced_decode
    assert params.pop("preprocessing")["decode"] == "full"
    if protocol == "tencrop" and not extra:
        assert params == {"resize": 256, "crop": 227, "scales": [256], "variant": "alexnet", "square": True,
                          "mirror": True, "combine": "softmax_mean"}
    elif protocol == "tencrop":  # fb.resnet.torch: whole-image corners, logits summed
        assert params["variant"] == "fb" and params["square"] is False and params["combine"] == "logit_sum"
    elif protocol == "dense":
        assert params["scales"] == [256, 288] and params["mirror"] is True
    else:
        assert params == {"scales": [227, 256], "crop": 227, "mirror": False, "combine": "softmax_mean"}
    assert 0 <= rec["top1"] <= rec["top5"] <= 100
    assert "not comparable" in p.stdout  # demo data vs the paper's ImageNet


@pytest.mark.slow  # each real CLI start-up costs ~10-20 s on 2 shared cores
def test_fit_refuses_a_test_protocol(tmp_path, shards):
    p = run(["fit", ALEXNET, "--data.root", shards, "--protocol", "tencrop"], tmp_path)
    assert p.returncode == 2 and "--protocol" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_bad_protocol_settings_are_one_clear_line(tmp_path, shards):
    p = run(["validate", ALEXNET, "--data.root", shards, *QUIET, "--protocol", "tencrop",
             "--protocol_scales", "[256,288]"], tmp_path)
    assert p.returncode == 2 and "--protocol_scales" in p.stderr and "Traceback" not in p.stderr
    p = run(["validate", ALEXNET, "--data.root", shards, *QUIET, "--protocol", "twelve"], tmp_path)
    assert p.returncode != 0 and "twelve" in p.stderr


@pytest.mark.slow
def test_test_honours_the_protocol_and_writes_its_record(tmp_path, shards):
    p = run(["test", ALEXNET, "--data.root", shards, "--data.batch_size", "20", *QUIET, "--protocol", "tencrop"],
            tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    rec = json.loads((tmp_path / "runs" / "alexnet" / "test-000" / "record.json").read_text())
    assert rec["command"] == "test" and rec["protocol"] == "tencrop"
    params = rec["protocol_params"]
    assert {k: params[k] for k in ("resize", "crop", "scales", "square", "mirror", "variant")} == \
        {"resize": 256, "crop": 227, "scales": [256], "square": True, "mirror": True, "variant": "alexnet"}
    assert params["preprocessing"]["decode"] == "full"
    assert rec["samples"] == rec["samples_expected"] == 10  # every image once, as ten views
    assert "run record:" in p.stdout
