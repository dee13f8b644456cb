"""Port checks: fail early and clearly when a port is taken."""

from __future__ import annotations

import random
import socket


class PortInUseError(RuntimeError):
    """A service's port is already taken by another process."""

    def __init__(self, port: int, service: str, setting: str) -> None:
        super().__init__(f"port {port} needed by {service} is already in use; set {setting} to another port")
        self.port = port
        self.setting = setting


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like the servers themselves: a TIME_WAIT left by the last run is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def ensure_free(port: int, *, service: str, setting: str, host: str = "127.0.0.1") -> None:
    if not is_free(port, host):
        raise PortInUseError(port, service, setting)


def free_port_block(size: int, *, rng: random.Random | None = None, attempts: int = 200) -> int:
    """First port of `size` consecutive free ports, chosen at random below the ephemeral range.

    For tests: each session picks its own block, so parallel runs and services already
    running on the machine do not collide.
    """
    rng = rng or random.Random()
    for _ in range(attempts):
        base = rng.randrange(20_000, 30_000 - size)
        if all(is_free(base + offset) for offset in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found in {attempts} attempts")
