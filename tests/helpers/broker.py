"""A Mosquitto that the test owns, on a free loopback port (the ``broker`` fixture of conftest.py starts one)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from helpers.net import free_port, wait_port


@dataclass
class Broker:
    """A Mosquitto that the test owns: it can be killed and started again on the same port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # central and the tests must never lose a QoS 1 message to the broker's queue bound
            "max_queued_messages 100000\n"
            "set_tcp_nodelay true\n"  # small MQTT packets go at once (protocols/mqtt/session.py: _no_delay)
            "max_inflight_messages 100\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
        )
        with open(self.workdir / "mosquitto.log", "ab") as log:  # Popen keeps its own copy of the descriptor
            self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.port)

    def kill(self) -> None:
        """SIGKILL, as a crashed broker or a pulled cable would look to the clients."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
