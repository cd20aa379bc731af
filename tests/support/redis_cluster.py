"""A real Redis Cluster for end-to-end tests: Debian's ``redis-server`` started
``cluster-enabled`` on free loopback ports (three primaries with a replica each by
default), joined with ``redis-cli --cluster create``, stopped by its PIDs."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.crc import key_slot

from channels_tuning.testing.live import free_port
from tests.support.processes import RedisServer, start_redis, stop_process

#: How long a primary may be unreachable before its replica takes over (ms). Short,
#: so a failover test waits seconds, not the default 15.
NODE_TIMEOUT_MS = 2000


@dataclass
class RedisCluster:
    nodes: list[RedisServer]
    password: str | None = None

    @property
    def urls(self) -> list[str]:
        auth = f":{self.password}@" if self.password else ""
        return [f"redis://{auth}127.0.0.1:{node.port}" for node in self.nodes]

    @property
    def env(self) -> dict[str, str]:
        """What points the example project's settings at this cluster."""
        return {"REDIS_CLUSTER": ",".join(self.urls)}

    def layer(self, **config: Any) -> Any:
        """A tuned cluster layer, for a test's producer."""
        from channels_tuning.layers import RedisClusterChannelLayer

        return RedisClusterChannelLayer(hosts=self.urls, **config)

    def cli(self, *args: str) -> str:
        """redis-cli on a live node, following redirections (``-c``) to a key's slot."""
        for node in self.nodes:
            if node.proc.poll() is None:
                auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
                return subprocess.run(
                    ["redis-cli", *auth, "-c", "-p", str(node.port), *args],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
        raise RuntimeError("no node of the cluster is running")

    def keys(self, pattern: str) -> list[str]:
        """Keys matching ``pattern`` on every primary."""
        found: list[str] = []
        for port in self.primary_ports():
            found += self.node(port).keys(pattern)
        return found

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def info(self, node: RedisServer | None = None) -> dict[str, str]:
        text = (node or self._live()).cli("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def primaries(self) -> list[tuple[str, int, list[tuple[int, int]]]]:
        """Each primary not marked failed, from ``CLUSTER NODES``: its node id, port and
        slot ranges (first, last)."""
        found = []
        for line in self._live().cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for spec in fields[8:]:
                if not spec.startswith("["):  # "[slot->-id]": a slot being migrated
                    first, _, last = spec.partition("-")
                    ranges.append((int(first), int(last or first)))
            found.append((fields[0], port, ranges))
        return found

    def primary_ports(self) -> dict[int, tuple[int, int]]:
        """Port of each primary serving slots -> the (first, last) slot of its first range."""
        return {port: ranges[0] for _, port, ranges in self.primaries() if ranges}

    def port_of_slot(self, slot: int) -> int:
        for _, port, ranges in self.primaries():
            if any(first <= slot <= last for first, last in ranges):
                return port
        raise LookupError(f"no primary serves slot {slot}")

    def port_of_key(self, key: str) -> int:
        return self.port_of_slot(key_slot(key.encode()))

    def _live(self) -> RedisServer:
        return next(node for node in self.nodes if node.proc.poll() is None)

    def replicas_in_sync(self) -> bool:
        """Every running replica's link to its primary is up (it can take over)."""
        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            info = node.cli("INFO", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def ok(self) -> bool:
        """Every running node sees every slot served."""
        try:
            return all(
                self.info(node).get("cluster_state") == "ok"
                for node in self.nodes
                if node.proc.poll() is None
            )
        except subprocess.CalledProcessError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            stop_process(node.proc)


def start_redis_cluster(
    tmp: Path, primaries: int = 3, replicas: int = 1, password: str | None = None
) -> RedisCluster:
    """``primaries`` x (1 + ``replicas``) redis-servers joined into one cluster, every
    slot covered, every node agreeing (``cluster_state:ok``) and every replica in
    sync before it returns."""
    nodes: list[RedisServer] = []
    try:
        for _ in range(primaries * (1 + replicas)):
            node_dir = tmp / f"cluster-node-{len(nodes)}"
            node_dir.mkdir()
            nodes.append(
                start_redis(
                    node_dir,
                    None,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # A free port of its own: the default (port + 10000) may be
                    # taken, or past 65535 for an ephemeral port.
                    "--cluster-port",
                    str(free_port()),
                    # Replicas sync at once (Redis waits 5 s for more replicas by
                    # default); one that never synced refuses to take over.
                    "--repl-diskless-sync-delay",
                    "0",
                    *(("--requirepass", password, "--masterauth", password) if password else ()),
                )
            )
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", str(replicas)]
        auth = ["-a", password, "--no-auth-warning"] if password else []
        subprocess.run(
            ["redis-cli", *auth, *create, "--cluster-yes"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if password:
            for node in nodes:
                node.password = password
        cluster = RedisCluster(nodes, password)
        deadline = time.monotonic() + 30
        while not (cluster.ok() and cluster.replicas_in_sync()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after 30 s: {cluster.info()}")
            time.sleep(0.1)
        return cluster
    except BaseException:
        for node in nodes:
            stop_process(node.proc)
        raise
