"""A service that starts its own Ray keeps Ray's servers on the loopback interface."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import psutil
import pytest

from tests.service.server import Server

pytestmark = pytest.mark.slow  # a server that starts a Ray of its own


def listening(root: int) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening socket in `root`'s process tree."""
    tree = {root} | {p.pid for p in psutil.Process(root).children(recursive=True)}
    found = set()
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in tree:
            found.add((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def test_a_local_only_service_and_its_own_ray_listen_on_loopback_only(tmp_path: Path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "data").start()
    try:
        assert server.process is not None
        sockets = listening(server.process.pid)
        names = {name for _, _, name in sockets}
        assert "gcs_server" in names and "raylet" in names, sockets  # Ray's own, not joined
        public = {s for s in sockets if not is_loopback(s[0])}
        assert not public, f"listening beyond loopback: {sorted(public)}"
    finally:
        server.stop()
