"""The 2-process (or N-process) runner of ddp_eval_worker.py, shared by test_ddp_eval.py and
test_remote.py: real gloo processes on 127.0.0.1, every wait bounded, stragglers killed by PID."""

import json
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("ddp_eval_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(rows: list, tmp_path: Path, world: int, workers: int, *extra: str,
              timeout: int) -> tuple[list[int], str, list | None]:
    """Run ``world`` ranks over the shards ``rows`` ([url, count(, sha256, bytes)] each): their return
    codes, their joined output, and the ranks' results (None unless every rank succeeded)."""
    out = tmp_path / "result.json"
    port = free_port()
    arg = json.dumps(rows)
    procs = [subprocess.Popen([sys.executable, str(WORKER), arg, str(r), str(world), str(port), str(workers),
                               str(out), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    ok = all(c == 0 for c in codes)
    return codes, "\n".join(logs), json.loads(out.read_text()) if ok else None
