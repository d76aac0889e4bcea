"""CPU per MB of streaming a shard from S3 (moto's server) and GCS (gcp-storage-emulator) on
127.0.0.1, server and client apart (issue 13): how each way of reading an object costs.

    PYTHONPATH=. python benchmarks/remote_request_cost.py [--mb 28] [--objects 4]

Ways, per protocol:
  * ``ShardStream``: what the loaders use (one GET of the whole object on S3, read-ahead thread);
  * ``ranged 8 MiB``: fsspec's buffered file with 8 MiB read-ahead blocks (a ranged GET per block),
    what ShardStream used on S3 before and uses on GCS (gcsfs has no streaming open).

Prints, per way, the server process's CPU ms per MB (from /proc), this process's CPU ms per MB and
the wall-clock MB/s, in alternating rounds. Objects of random bytes (no decode, no tar parsing).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# this folder is on sys.path when run as a script
from remote_streaming import _free_port, _serve


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=28.0, help="object size (default: 256 ImageNet-sized JPEGs)")
    p.add_argument("--objects", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    size = int(a.mb * 2**20)
    data = os.urandom(size)
    procs = {}
    logs = Path(tempfile.mkdtemp(prefix="bench-request-cost-"))
    try:
        port = _free_port()
        procs["s3"] = _serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                             logs / "moto.log")
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        port = _free_port()
        procs["gs"] = _serve([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port",
                              str(port), "--in-memory", "--default-bucket", "bench", "--quiet"], port, logs / "gcs.log")
        os.environ.update({"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "true",
                           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
        from cnnrepro.data.remote import ShardStream, _filesystem

        _filesystem("s3://bench").mkdir("bench")
        urls = {proto: [f"{proto}://bench/obj{i}" for i in range(a.objects)] for proto in procs}
        for proto in procs:
            fs = _filesystem(f"{proto}://bench")
            for url in urls[proto]:
                fs.pipe_file(url, data)

        def stream(url: str) -> None:
            s = ShardStream(url, size=size)
            while s.read(1 << 20):
                pass
            s.close()

        def ranged(url: str) -> None:
            with _filesystem(url).open(url, "rb", block_size=8 << 20, cache_type="readahead") as f:
                while f.read(1 << 20):
                    pass

        print(f"{a.objects} objects of {a.mb:g} MB per round, {a.rounds} rounds; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for proto, proc in procs.items():
            ways = {"ShardStream": stream, "ranged 8 MiB": ranged}
            figures = {k: [] for k in ways}
            for _ in range(a.rounds + 1):  # the first round warms up (connections, imports)
                for name, way in ways.items():
                    s0, c0, t0 = _cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
                    for url in urls[proto]:
                        way(url)
                    s1, c1, t1 = _cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
                    mb = a.objects * size / 2**20
                    figures[name].append((1000 * (s1 - s0) / mb, 1000 * (c1 - c0) / mb, mb / (t1 - t0)))
            for name, rows in figures.items():
                rows = sorted(rows[1:], key=lambda r: r[2])
                server, client, rate = rows[len(rows) // 2]  # the median round by rate
                print(f"{proto}  {name:13s} server {server:5.2f} ms/MB  client {client:5.2f} ms/MB  {rate:6.1f} MB/s")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
