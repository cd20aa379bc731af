"""The private hooks on real servers: the tuned server's self-check at start, and a
changed upstream (simulated by a patch imported before the server starts) logged with
its fallback in use. The hooks' canaries are in tests/unit/compat/test_compat.py."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import websockets


def _stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as response:
        return json.loads(response.read())


async def _echo(url: str) -> None:
    async with websockets.connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"


async def test_tuned_server_self_check_passes_and_switches_transports(daphne_factory):
    server = daphne_factory(tuned=True)
    await _echo(server.ws("/ws/echo/"))
    compat = _stats(server.port)["compat"]
    assert compat["problems"] == []
    assert compat["twisted"] == {
        "eager_write": True,
        "forget_upgraded": True,
        "bounded_accepts": True,
        "port_factory": True,
        "report_loss": True,
        "renew_after_fork": True,
    }
    assert compat["eager_transports"] >= 1
    assert "changed" not in server.log.read_text()


# ------------------------------------------------------------ uvicorn, hypercorn


async def test_changed_uvicorn_is_logged_at_the_first_connection(daphne_factory, tmp_path):
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "from uvicorn.protocols.websockets import websockets_sansio_impl as m\n"
        "original = m.WebSocketsSansIOProtocol.connection_made\n"
        "def connection_made(self, transport):\n"
        "    original(self, transport)\n"
        "m.WebSocketsSansIOProtocol.connection_made = connection_made\n"
    )
    server = daphne_factory(server="uvicorn", PYTHONPATH_PREPEND=str(patch))
    await _echo(server.ws("/ws/echo/"))
    log = server.log.read_text()
    assert log.count("uvicorn changed: WebSocketsSansIOProtocol.connection_made") == 1
    assert "WebSockets served by uvicorn: 8 of 9 guarantees hold" in log


async def test_changed_upstream_is_logged_and_its_fallback_used(daphne_factory, tmp_path: Path):
    # Simulate a Twisted release that gave tcp.Server __slots__ (so __class__ cannot be
    # switched): the real process imports a patched Twisted before the server starts.
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "from twisted.internet import tcp\ntcp.Server.__slots__ = ('socket',)\n"
    )
    server = daphne_factory(tuned=True, PYTHONPATH_PREPEND=str(patch))
    await _echo(server.ws("/ws/echo/"))
    compat = _stats(server.port)["compat"]
    assert compat["twisted"] == {
        "eager_write": False,
        "forget_upgraded": True,
        "bounded_accepts": True,  # a change to another symbol leaves this hook on
        "port_factory": True,
        "report_loss": True,
        "renew_after_fork": True,
    }
    assert compat["eager_transports"] == 0
    assert any("tcp.Server" in problem for problem in compat["problems"])
    log = server.log.read_text()
    assert "Twisted changed: tcp.Server" in log and "fallback" in log
    assert log.count("Twisted changed") == 1
