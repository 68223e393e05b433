"""Loopback ports for tests that run servers, safe when several test processes (pytest-xdist workers,
or other suites on the machine) start servers at once: never a fixed port number."""

from __future__ import annotations

import socket


def bound_socket() -> socket.socket:
    """A loopback socket bound to a port the kernel chose, held open: hand it to the server itself, so
    that no other process can take the port between choosing it and listening on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port the kernel just chose (free now), for a server in another process that only takes a port
    number; another process could take it in between, but the kernel hands out a recently freed port
    rarely."""
    with bound_socket() as sock:
        return sock.getsockname()[1]
