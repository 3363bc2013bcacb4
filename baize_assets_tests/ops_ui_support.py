"""Support for the UI tests: a webserver and daemon deployment, headless Chromium, the GraphQL API, polling."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from dagster import DagsterInstance

from baize_assets.core.config.pipeline import PROJECT_ROOT, load_config
from baize_assets.definitions import build_definitions

from .ops_location import CONFIG_PATH
from .ops_support import free_port, missing_requirement, process_group, resources_for

T = TypeVar("T")

BIN = Path(sys.executable).parent
OPS_LOCATION = ["-m", "baize_assets_tests.ops_location"]
# The project's own code location, which reads its configuration from BAIZE_CONFIG.
PROJECT_LOCATION = ["-m", "baize_assets.definitions"]
TEACHER_KEY = "sk-test-not-a-real-key"
# A SQLite instance whose run queue the daemon drains every second.
INSTANCE_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""

# Chromium of the distribution (Debian's ``chromium`` package); playwright drives it as is,
# without the browser builds it would otherwise download.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> str:
    """Path of the system Chromium; fail under CI (``make test`` installs it), skip elsewhere."""
    path = shutil.which("chromium")
    if path is None:
        missing_requirement("the chromium browser is not installed (apt-get install chromium)")
    return path


@contextmanager
def chromium_page(profile_dir: Path, width: int, height: int, scale: float = 1) -> Iterator:
    """A page of headless Chromium on a fresh profile; the browser is closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=require_chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            device_scale_factor=scale,
        )
        try:
            page = context.new_page()
            # The UI greets a new instance with a newsletter dialog over the page.
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda button: button.click())
            yield page
        finally:
            context.close()


def graph_node_names(page) -> list[str]:
    """Names on the asset nodes of the lineage graph on ``page``, in the page's order."""
    return page.locator("[class*='AssetNode_assetName'] [data-tooltip]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.tooltip)"
    )


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    """POST one GraphQL operation to the webserver; its ``data``, or an error naming the problem."""
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def wait_for(describe: str, probe: Callable[[], T], timeout_s: float, on_timeout: Callable[[], str] = str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``describe`` and extra context."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {describe}\n{on_timeout()}")
        time.sleep(0.2)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port``, from the kernel's own tables."""
    addresses = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, _, state = line.split()[1:4]
            address_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            # The kernel prints the address as native-endian 32-bit words.
            raw = bytes.fromhex(address_hex)
            words = struct.unpack(f"<{len(raw) // 4}I", raw)
            addresses.add(socket.inet_ntop(family, struct.pack(f">{len(words)}I", *words)))
    return addresses


def log_tail(*logs: Path, chars: int = 4000) -> str:
    return "\n".join(f"--- {log.name} ---\n{log.read_text(errors='replace')[-chars:]}" for log in logs if log.exists())


class Deployment:
    """A webserver and a daemon on a temporary SQLite instance, serving one code location.

    By default the location is ``ops_location`` (``ops_baize.yaml``); with ``config_path``
    it is the project's definitions on that file, passed in BAIZE_CONFIG.
    """

    def __init__(self, root: Path, teacher_url: str, config_path: Path | None = None) -> None:
        self.home = root / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(INSTANCE_YAML)
        self.output = root / "output"
        self.logs = root / "logs"
        self.logs.mkdir()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.location = OPS_LOCATION if config_path is None else PROJECT_LOCATION
        self.config = load_config(config_path or CONFIG_PATH)
        self.defs = build_definitions(self.config, resources=resources_for(self.output))
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "BAIZE_OUTPUT_DIR": str(self.output),
            # Each run's steps in the run's own process: one process start per run, not per step.
            "BAIZE_EXECUTOR": "in_process",
            "OPENAI_BASE_URL": teacher_url,
            "OPENAI_API_KEY": TEACHER_KEY,
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        if config_path is not None:
            self.env["BAIZE_CONFIG"] = str(config_path)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def daemon(self, name: str):
        return process_group([str(BIN / "dagster-daemon"), "run", *self.location], self.log(name), self.env)

    def webserver(self, name: str):
        """The webserver on this deployment's port, with its default host (what a user gets unless told)."""
        args = [str(BIN / "dagster-webserver"), *self.location, "--port", str(self.port)]
        return process_group(args, self.log(name), self.env)

    def wait_until_serving(self, webserver, name: str, timeout_s: float = 120) -> None:
        wait_for(
            f"the webserver ({name}) to answer",
            lambda: webserver.poll() is None and http_ok(f"{self.base_url}/server_info"),
            timeout_s=timeout_s,
            on_timeout=lambda: log_tail(self.log(name)),
        )
