"""Free ports for the servers a deployment or a test starts: bindable, distinct, and out of the range the
kernel gives outgoing connections, so that no client connection takes one before its server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dlstream.runtime import net

pytestmark = pytest.mark.unit


def test_ports_are_distinct_bindable_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    first, second = net.free_ports(8), net.free_ports(8)
    assert len(set(first + second)) == 16
    low = int(net.EPHEMERAL_RANGE.read_text().split()[0])
    assert all(net.LOWEST_PORT <= port < low for port in first + second)
    for port in first:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_without_the_kernels_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(net, "EPHEMERAL_RANGE", tmp_path / "missing")
    ports = net.free_ports(3)
    assert len(set(ports)) == 3
    assert all(port > 0 for port in ports)
