"""Refuse and record network connections that leave the machine.

Built on CPython audit hooks (PEP 578): every ``socket.connect``, ``socket.sendto`` and
``socket.getaddrinfo`` made from Python code raises an audit event before anything is
sent. While a :class:`NetworkGuard` is active, an event that targets anything but the
loopback interface (or a host the administrator allowed, such as the configured upstream
chat server) is recorded and refused with ``PermissionError``, so no packet leaves.

Audit hooks cannot be removed once added; the hook is added once per process and does
nothing while no guard is active.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_state_lock = threading.Lock()
_active: list[NetworkGuard] = []
_hook_installed = False


@dataclass(frozen=True, slots=True)
class BlockedAttempt:
    event: str  # "connect", "sendto" or "getaddrinfo"
    target: str  # "host:port" as the code asked for it


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class NetworkGuard:
    """Context manager: while active, non-loopback connections are refused and recorded."""

    allowed_hosts: Iterable[str] = ()
    attempts: list[BlockedAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._allowed = {h.lower().strip("[]") for h in self.allowed_hosts}

    def __enter__(self) -> NetworkGuard:
        _install_hook()
        with _state_lock:
            _active.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _state_lock:
            _active.remove(self)

    def permits(self, host: str) -> bool:
        return is_loopback(host) or host.lower().strip("[]") in self._allowed

    def check(self, event: str, host: str, port: Any) -> None:
        if self.permits(host):
            return
        attempt = BlockedAttempt(event, f"{host}:{port}")
        self.attempts.append(attempt)
        raise PermissionError(f"outbound network access refused by the appliance: {attempt.target}")


def _target(event: str, args: tuple[Any, ...]) -> tuple[str, Any] | None:
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
        if host is None:
            return None
        return (host.decode() if isinstance(host, bytes) else str(host)), port
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            return None  # unix sockets and netlink stay on the machine
        if isinstance(address, tuple) and address:
            return str(address[0]), address[1] if len(address) > 1 else ""
    return None


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _active or event not in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
        return
    target = _target(event, args)
    if target is None:
        return
    with _state_lock:
        guards = list(_active)
    for guard in guards:
        guard.check(event.removeprefix("socket."), *target)


def _install_hook() -> None:
    global _hook_installed
    with _state_lock:
        if not _hook_installed:
            sys.addaudithook(_hook)
            _hook_installed = True
