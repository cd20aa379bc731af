"""HAProxy and nginx (the Debian packages) started by the tests with the deployment guide's
configurations, their ports replaced by free ones and their servers by the tests'
processes."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .processes import REPO, free_port, wait_for_port

DEPLOYMENT_GUIDE = REPO / "docs" / "topics" / "deployment.md"


def readme_config() -> str:
    """The ``haproxy`` block of the deployment guide, as written."""
    text = DEPLOYMENT_GUIDE.read_text()
    return re.search(r"```haproxy\n(.*?)```", text, re.S).group(1)


@dataclass
class HAProxy:
    port: int
    stats_port: int
    proc: subprocess.Popen
    log: Path

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def server_states(self) -> dict[str, str]:
        """``{server name: status}`` of the backend ("UP", "DOWN", ...), from HAProxy's
        own stats page."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
            return {
                row["svname"]: row["status"]
                for row in rows
                if row["pxname"] == "channels" and row["svname"] not in ("FRONTEND", "BACKEND")
            }


def start_haproxy(
    tmp: Path,
    backend_ports: list[int],
    edits: dict[str, str] | None = None,
    check_ports: list[int | None] | None = None,
) -> HAProxy:
    """HAProxy with the guide's configuration (``edits``: text replaced in it, each
    of which must be there). Its servers are checked on their ``--health-port``,
    ``check_ports`` (one per backend); where there is none (the tests whose subject
    is not the check), on the port they serve."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    config = _edited(readme_config(), edits)
    port, stats_port = free_port(), free_port()
    config = config.replace("bind 127.0.0.1:8000", f"bind 127.0.0.1:{port}")
    config = config.replace("bind 127.0.0.1:8404", f"bind 127.0.0.1:{stats_port}")
    checks = check_ports or [None] * len(backend_ports)
    servers = "".join(
        f"    server s{i} 127.0.0.1:{server_port}" + (f" port {check}" if check else "") + "\n"
        for i, (server_port, check) in enumerate(zip(backend_ports, checks, strict=True), start=1)
    )
    config, replaced = re.subn(r"(    server s\d+ 127\.0\.0\.1:\d+ port \d+\n)+", servers, config)
    assert replaced == 1, "the guide's server lines changed"
    path = tmp / f"haproxy-{port}.cfg"
    path.write_text(config)
    log = tmp / f"haproxy-{port}.log"
    # -db: stay in the foreground (the tests end it by its PID).
    proc = subprocess.Popen(
        [binary, "-db", "-f", str(path)], stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    wait_for_port(port, proc, log)
    return HAProxy(port, stats_port, proc, log)


def _edited(config: str, edits: dict[str, str] | None) -> str:
    for old, new in (edits or {}).items():
        assert old in config, f"not in the guide's configuration: {old!r}"
        config = config.replace(old, new)
    return config


def readme_nginx_config() -> str:
    """The ``nginx`` block of the deployment guide, as written."""
    text = DEPLOYMENT_GUIDE.read_text()
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen
    log: Path

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def start_nginx(tmp: Path, backend_ports: list[int], edits: dict[str, str] | None = None) -> Nginx:
    """nginx in the foreground with the README's server block inside a minimal main
    configuration (its files under ``tmp``)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    site = _edited(readme_nginx_config(), edits)
    site = site.replace("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{port};")
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in backend_ports)
    site = re.sub(r"(    server 127\.0\.0\.1:\d+;\n)+", servers, site)
    root = tmp / f"nginx-{port}"
    root.mkdir()
    temp_paths = "".join(
        f"    {name}_temp_path {root}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = (
        f"daemon off;\nworker_processes 1;\npid {root}/nginx.pid;\n"
        f"error_log {root}/error.log info;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log {root}/access.log;\n{temp_paths}{site}}}\n"
    )
    path = root / "nginx.conf"
    path.write_text(config)
    log = root / "stderr.log"
    proc = subprocess.Popen(
        [binary, "-p", str(root), "-c", str(path)], stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    wait_for_port(port, proc, log)
    return Nginx(port, proc, log)
