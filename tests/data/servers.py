"""Real servers on 127.0.0.1 for the remote-data tests: moto's S3 server, gcp-storage-emulator's GCS
API and Python's http.server, started as child processes and stopped by PID (shared by
test_remote.py, test_store_write.py, test_gcs.py, test_bench_remote.py, test_readahead.py)."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list, log: Path) -> subprocess.Popen:
    # the servers log every request: to a file, since a pipe nobody reads fills and blocks them
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: see {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def environment(env: dict):
    """``env`` set in os.environ while the context lasts; the earlier values (or their absence) after."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def port_file_server(cmd: list, port_file: Path, log: Path):
    """A server that picks its own port and writes it to ``port_file`` once it listens (the fault
    servers: fault_http_server.py, cut_proxy.py). Yields the port."""
    port_file.unlink(missing_ok=True)
    proc = start(cmd, log)
    try:
        end = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: see {log}")
            time.sleep(0.05)
        port = int(port_file.read_text())
        wait_for_port(port, proc)
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def http_server(directory: Path, log: Path):
    """``http://127.0.0.1:PORT`` serving ``directory``."""
    port = free_port()
    proc = start([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                  str(directory)], log)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextlib.contextmanager
def moto_server(log: Path, bucket: str):
    """moto's S3 server with ``bucket`` created; the AWS_* variables (the client's usual credential
    and endpoint route) point at it while the context lasts. Yields a boto3 client."""
    port = free_port()
    proc = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with environment(env):
            wait_for_port(port, proc)
            import boto3

            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=bucket)
            yield s3
    finally:
        stop(proc)


@contextlib.contextmanager
def gcs_server(log: Path, bucket: str):
    """gcp-storage-emulator's GCS JSON API, in memory, with ``bucket`` created; while the context
    lasts STORAGE_EMULATOR_HOST (the endpoint gcsfs and Google's own clients read) points at it and
    NO_GCE_CHECK keeps gcsfs from asking for a GCE metadata server (it then connects anonymously,
    which the emulator accepts). Yields the endpoint URL."""
    port = free_port()
    proc = start([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
                  "--in-memory", "--default-bucket", bucket], log)
    # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT (read when gcsfs is imported): no Storage Control API call for
    # the bucket's type, which the emulator does not serve (gcsfs falls back, with a warning, anyway)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "NO_GCE_CHECK": "true",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    try:
        with environment(env):
            wait_for_port(port, proc)
            yield env["STORAGE_EMULATOR_HOST"]
    finally:
        stop(proc)
