"""A NATS cluster that the test owns: N nodes with JetStream and an MQTT listener, on free loopback ports.

Each node is its own nats-server process with its own store folder, so a test can SIGKILL one (a crashed node
or a pulled cable) and the others carry on. The ``nats_cluster`` fixture of conftest.py starts three.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.net import free_port, wait_port

NATS_SERVER = "nats-server"


@dataclass
class NatsNode:
    name: str
    workdir: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def config(self, routes: list[int]) -> str:
        route_lines = "\n".join(f"    nats-route://127.0.0.1:{p}" for p in routes)
        return (
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{self.workdir / "js"}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
            f"cluster {{\n  name: gridedge-test\n  listen: 127.0.0.1:{self.cluster_port}\n"
            f"  routes: [\n{route_lines}\n  ]\n}}\n"
            # explicit: left alone, a node that starts before its routes are up makes the MQTT streams R2, and
            # losing one of their two nodes then stalls every MQTT session (no quorum)
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: 3 }}\n"
        )


@dataclass
class NatsCluster:
    workdir: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [NatsNode(f"n{i + 1}", self.workdir / f"n{i + 1}") for i in range(self.size)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            self._start(node)
        for node in self.nodes:
            wait_port(node.client_port)
            wait_port(node.mqtt_port)
        self.wait_healthy()

    def _start(self, node: NatsNode) -> None:
        node.workdir.mkdir(parents=True, exist_ok=True)
        conf = node.workdir / "nats.conf"
        conf.write_text(node.config([n.cluster_port for n in self.nodes if n is not node]))
        with open(node.workdir / "nats.log", "ab") as log:
            node.proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every running node reports JetStream ready (a meta leader is elected)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.proc is None:
                continue
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=1) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"NATS node {node.name} not healthy after {timeout} s: {self.log(node)}")
                time.sleep(0.05)

    def log(self, node: NatsNode) -> str:
        path = node.workdir / "nats.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self, node: NatsNode) -> None:
        """SIGKILL, as a crashed node would look to its clients and peers."""
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(5)
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(5)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)
            node.proc = None
