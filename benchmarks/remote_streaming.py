"""Streaming ratio on loopback (issue 13): `cnnrepro bench data --root URL` against an HTTP server
(Python's http.server), an S3 API (moto's server, ``pip install 'moto[server]'``) and a GCS API
(gcp-storage-emulator, in memory, if installed), all started here on 127.0.0.1, over shards of
photo-like JPEGs of ImageNet's file size (``--preset imagenet``).

    PYTHONPATH=. python benchmarks/remote_streaming.py [--images 2000] [--rounds 3] [--dir DIR]

Prints, per protocol, the table of ``cnnrepro bench data --root URL --local DIR`` (remote and local
samples/s in alternating rounds of one run, and their ratio): the plain client alone (the server's
ceiling), the route alone (bytes, parsing, sha256) and the training loader (decode included).
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cmd: list, port: int, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd[2]} did not start on port {port}: see {log}")


def main() -> int:
    from cnnrepro.data.bench import PRESETS, build_bench_tree
    from cnnrepro.data.cache import cache_dir
    from cnnrepro.data.shards import write_shards

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=None, help="default $CNNREPRO_CACHE/bench-remote")
    a = p.parse_args()
    base = Path(a.dir) if a.dir else cache_dir() / "bench-remote"
    quality, noise = PRESETS["imagenet"]
    tree = build_bench_tree(base / f"tree-{a.images}", a.images, quality=quality, noise=noise)
    shards = base / "www" / "shards"
    if not (shards / "manifest.json").exists():
        write_shards(tree, shards, samples_per_shard=256, workers=1, progress=False)
    logs = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    procs = []
    try:
        port = _free_port()
        procs.append(_serve([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(base / "www")], port, logs / "http.log"))
        roots = {"http": f"http://127.0.0.1:{port}/shards"}
        port = _free_port()
        procs.append(_serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                            logs / "moto.log"))
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        for f in sorted(shards.iterdir()):
            if f.is_file():
                s3.upload_file(str(f), "bench", f"shards/{f.name}")
        roots["s3"] = "s3://bench/shards"
        try:
            import gcp_storage_emulator  # noqa: F401 -- the test extra; gs:// is measured only with it
        except ImportError:
            print("gs:// skipped: pip install gcp-storage-emulator", flush=True)
        else:
            port = _free_port()
            procs.append(_serve([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                                 "--port", str(port), "--in-memory", "--default-bucket", "bench", "--quiet"], port,
                                logs / "gcs.log"))
            # gcsfs asks a Storage Control API for the bucket type unless told not to (the emulator has none)
            os.environ.update({"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "true",
                               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
            from cnnrepro.data.remote import _filesystem

            fs = _filesystem("gs://bench")
            for f in sorted(shards.iterdir()):
                if f.is_file():
                    fs.put_file(str(f), f"gs://bench/shards/{f.name}")
            roots["gs"] = "gs://bench/shards"
        for name, url in roots.items():
            print(f"== {name}: cnnrepro bench data --root {url} --local {shards} --rounds {a.rounds}", flush=True)
            subprocess.run([sys.executable, "-m", "cnnrepro.cli", "bench", "data", "--root", url, "--local",
                            str(shards), "--rounds", str(a.rounds)], check=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
