"""The package's Python client on the tests' dashboard consumer (``/ws/dashboard-quick/``
of ``tests.e2e_asgi``), signed in with a session."""

from __future__ import annotations

from channels_tuning.client import Backoff, ReconnectingClient


def dashboard_client(server, session: str, **options) -> ReconnectingClient:
    """A client of ``server``'s dashboard for the user of ``session`` (not started)."""
    return ReconnectingClient(
        server.ws("/ws/dashboard-quick/"),
        codec="json",
        origin=f"http://127.0.0.1:{server.port}",
        headers={"Cookie": f"sessionid={session}"},
        backoff=Backoff(initial_delay=0.1, max_delay=0.5),
        **options,
    )
