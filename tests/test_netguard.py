from __future__ import annotations

import socket
import threading
import urllib.request
from urllib.error import URLError

import pytest

from appliance.netguard import NetworkGuard, is_loopback


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("10.0.0.1") and not is_loopback("192.0.2.1")
    assert not is_loopback("example.org")


def test_outbound_connect_is_refused_before_any_packet() -> None:
    with NetworkGuard() as guard, pytest.raises(PermissionError, match=r"192\.0\.2\.1:80"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    assert (guard.attempts[0].event, guard.attempts[0].target) == ("getaddrinfo", "192.0.2.1:80")


def test_name_lookup_of_an_outside_host_is_refused() -> None:
    with NetworkGuard() as guard, pytest.raises(URLError, match="refused by the appliance"):
        urllib.request.urlopen("http://example.org/", timeout=1)
    assert guard.attempts and guard.attempts[0].target.startswith("example.org:")


def test_udp_sendto_outside_is_refused() -> None:
    with (
        NetworkGuard() as guard,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
        pytest.raises(PermissionError),
    ):
        s.sendto(b"x", ("192.0.2.7", 53))
    assert guard.attempts[0].event == "sendto"


def test_loopback_and_allowed_hosts_pass() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    thread.start()
    with NetworkGuard(allowed_hosts=["10.1.2.3"]) as guard:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert guard.permits("10.1.2.3") and not guard.permits("10.1.2.4")
    thread.join(2)
    server.close()
    for conn in accepted:
        conn.close()
    assert guard.attempts == [] and len(accepted) == 1


def test_no_guard_no_interference() -> None:
    with NetworkGuard():
        pass
    # outside a guard, a lookup of a numeric address is not refused by us
    assert socket.getaddrinfo("192.0.2.1", 80, proto=socket.IPPROTO_TCP)
