"""broadcast_on_commit(): a message about a change leaves when the change is
committed, never when it is rolled back. A real tuned server on Redis, a client in the
group, and a producer process that writes to the example project's SQLite database."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from tests.support.processes import migrate, run_django
from tests.support.waiting import recv_data

PRODUCER = """
import sys, time
from django.contrib.auth.models import User
from django.db import transaction
from channels_tuning.broadcast import broadcast_on_commit

name, outcome = sys.argv[1], sys.argv[2]
try:
    with transaction.atomic():
        User.objects.create_user(name)
        broadcast_on_commit("accounts", {"created": name})
        time.sleep(1.0)  # the rest of the request's work, inside the transaction
        if outcome == "rollback":
            raise RuntimeError("the request failed")
        committing = time.time()
except RuntimeError:
    committing = None
print(committing)
"""


def produce(env: dict[str, str], name: str, outcome: str) -> float | None:
    out = run_django(env, PRODUCER, name, outcome)
    return None if out == "None" else float(out)


@pytest.mark.slow
async def test_the_message_leaves_at_the_commit_and_not_at_a_rollback(
    daphne_factory, tmp_path, shared_redis
):
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "commit-test"}
    quiet = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None}
    server = daphne_factory(tuned=True, redis=shared_redis, tuning=quiet, **db)
    migrate(server.env)
    async with websockets.connect(server.ws("/ws/group/accounts/")) as client:
        loop = asyncio.get_running_loop()
        committed = await loop.run_in_executor(None, produce, server.env, "erin", "commit")
        assert committed is not None
        assert await recv_data(client) == '{"created":"erin"}'
        arrived = time.time()
        # Not before the commit (the transaction slept 1 s after broadcast_on_commit).
        assert arrived >= committed
        await loop.run_in_executor(None, produce, server.env, "frank", "rollback")
        try:
            unexpected = await asyncio.wait_for(client.recv(), 1.5)
        except asyncio.TimeoutError:
            unexpected = None
        assert unexpected is None  # rolled back: nothing was said
