"""Support for the UI tests: headless Chromium on the Dagster UI, the GraphQL API, polling."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from .ops_support import missing_requirement

T = TypeVar("T")

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
        time.sleep(0.5)


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
