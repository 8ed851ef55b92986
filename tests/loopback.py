"""An S3-compatible server on the loopback address for the store's tests, and a door in front of it.

``moto`` in server mode keeps its buckets in its process; the tests reach it through a plain TCP
forwarder (the door, a process of its own) so that "the store went away" is the door killed and the
server's state survives to be inspected afterwards. Everything is bounded in time and torn down.

    python tests/loopback.py door LISTEN_PORT TARGET_PORT      (the forwarder, run by the fixtures)
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

START_TIMEOUT = 30.0  # seconds for a process to listen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the loopback process on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


@dataclass
class Loopback:
    """A moto S3 server and the door the tests reach it through (``endpoint``)."""

    server: subprocess.Popen[bytes]
    server_port: int
    door: subprocess.Popen[bytes] | None
    door_port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.door_port}"

    def close_door(self) -> None:
        if self.door is not None:
            stop(self.door)

    def open_door(self) -> None:
        if self.door is not None and self.door.poll() is None:
            return
        self.door = subprocess.Popen(
            [sys.executable, __file__, "door", str(self.door_port), str(self.server_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.door_port, self.door)

    def env(self) -> dict[str, str]:
        """What boto/s3fs need to reach the server: the endpoint and dummy credentials, one attempt each."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_RETRY_MODE": "standard",
        }


@contextlib.contextmanager
def loopback() -> Iterator[Loopback]:
    server_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(server_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running = Loopback(server, server_port, None, free_port())
    try:
        wait_listening(server_port, server)
        running.open_door()
        yield running
    finally:
        running.close_door()
        stop(server)


# ----------------------------------------------------------------------------- the door (its own process)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def door(listen_port: int, target_port: int) -> None:
    with socket.create_server(("127.0.0.1", listen_port)) as server:
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "door":
    door(int(sys.argv[2]), int(sys.argv[3]))
