"""`cnnrepro bench data --root URL` against a real http.server on 127.0.0.1 (started here): both
routes read every sample, and the ratio printed is the ratio of the two rates printed. No speed
is asserted (the claims come from the benchmark's own printout)."""

import json
import re

import pytest
import torch
from servers import http_server
from test_shards import _tree

from cnnrepro.commands.bench import main as bench_main
from cnnrepro.data.shards import read_manifest, write_shards


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benchremote")
    write_shards(_tree(tmp / "src", train=6, val=3), tmp / "www" / "shards", samples_per_shard=4, workers=1,
                 progress=False)
    with http_server(tmp / "www", tmp / "http.log") as url:
        yield url + "/shards", tmp / "www" / "shards"


def test_bench_data_on_an_http_root_prints_both_rates_and_their_ratio(served, tmp_path, capsys):
    url, local = served
    m = read_manifest(local)
    total = m["train"]["samples"] + m["val"]["samples"]
    threads = torch.get_num_threads()
    assert bench_main("bench", ["data", "--root", url, "--rounds", "2", "--dir", str(tmp_path), "--json",
                                "--batch-size", "8"]) == 0
    r = json.loads(capsys.readouterr().out)
    # timed on one torch thread, as in a loader worker, and the caller's setting is given back
    assert r["machine"]["torch_threads"] == 1 and torch.get_num_threads() == threads
    assert r["samples"] == total
    assert r["route"]["samples"] == r["route"]["samples_remote"] == total
    n_train = m["train"]["samples"] // 8 * 8  # an epoch of whole batches of 8
    assert r["loader"]["samples"] == r["loader"]["samples_remote"] == n_train
    assert r["shards"] == len(m["train"]["shards"]) + len(m["val"]["shards"])
    downloaded = {p.name: p.read_bytes() for p in tmp_path.glob("remote-*/*.tar")}
    assert downloaded == {sh["name"]: (local / sh["name"]).read_bytes() for sh in m["train"]["shards"] + m["val"]["shards"]}
    # the plain client fetched every shard whole, on both sides
    assert r["fetch"]["samples"] == r["fetch"]["samples_remote"] == total
    assert r["fetch"]["bytes"] == r["fetch"]["bytes_remote"] == sum(sh["bytes"] for s in ("train", "val")
                                                                    for sh in m[s]["shards"])
    for what in ("fetch", "route", "loader"):
        row = r[what]
        assert row["ratio"] == pytest.approx(row["remote_samples_per_s"] / row["local_samples_per_s"])
        assert len(row["ratio_per_round"]) == 2

    assert bench_main("bench", ["data", "--root", url, "--local", str(local), "--rounds", "1",
                                "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{url}: {r['shards']} shards, {total} samples")
    rows = re.findall(r"^\s+([\d.]+) remote\s+([\d.]+) local  ratio ([\d.]+) \(per round: [\d., ]+\)  (\w+)", out,
                      re.MULTILINE)
    assert [row[3] for row in rows] == ["plain", "route", "training"]
    for remote_rate, local_rate, ratio, _ in rows:
        assert float(ratio) == pytest.approx(float(remote_rate) / float(local_rate), rel=0.02, abs=0.01)


def test_bench_local_copy_that_is_not_the_same_shards_is_refused(served, tmp_path):
    from cnnrepro.cli import main

    url, _ = served
    other = tmp_path / "other"
    write_shards(_tree(tmp_path / "src2", train=2, val=2), other, samples_per_shard=4, workers=1, progress=False)
    assert main(["bench", "data", "--root", url, "--local", str(other)]) == 2
