"""Topics and users benchmark: plain Channels against channels-tuning, in one run.

Plain Channels is what Channels applications write by hand for "one socket, many
streams" (``PlainTopicsConsumer`` in ``tests/e2e_asgi.py``: a JSON request does
``group_add`` / ``group_discard``, no table, no authorization, no bounds) and for a
user's tabs (a group per user joined in ``connect()``, ``group_send`` to it, a handler
that sends or closes), on daphne and channels-redis. The package: a ``topics`` table
(``TunedTopicsConsumer``), ``send_to_user()`` and ``disconnect_user()`` on
channels-tuning-daphne and the tuned Redis layer. One redis-server, all on loopback.

- subscribe rate: ``--clients`` connections each subscribe and unsubscribe
  ``--rounds`` times, one request in flight per connection: requests per second,
  server CPU per request, request p50/p99;
- send_to_user: one user with a tab on each of two server processes; ``--sends``
  sends from this process, one at a time: latency to both tabs, p50/p99;
- disconnect_user: ``--users`` users with a tab on each of two servers; each user
  disconnected in turn: server CPU per call (both servers, the closes and cleanup
  included), time until every tab is closed.

With ``--memory``: ``--clients`` tuned connections each holding ``--per-client``
subscriptions (the consumer's cap is 1000 here, 100 by default): server RSS and Redis
memory per subscription, and the same after every connection closed.

No ``websockets`` ceiling here: a bare websockets server has no groups, users or
authorization to compare with.

    python -m benchmarks.topics [--clients 50] [--rounds 100] [--sends 300] [--users 100]
    python -m benchmarks.topics --memory [--clients 200] [--per-client 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.fanout import cpu_seconds  # noqa: E402
from tests.support.processes import (  # noqa: E402
    migrate,
    run_django,
    start_daphne,
    start_redis,
    stop_process,
)

APPLICATION = "tests.e2e_asgi:application_behind_auth"
QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None}
SESSIONS = (
    "import sys\n"
    "from django.contrib.auth.models import User\n"
    "from django.contrib.sessions.backends.db import SessionStore\n"
    "for n in range(int(sys.argv[1])):\n"
    "    u = User.objects.create_user(f'{sys.argv[2]}{n}')\n"
    "    s = SessionStore(); s['_auth_user_id'] = str(u.pk)\n"
    "    s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend'\n"
    "    s['_auth_user_hash'] = u.get_session_auth_hash(); s.create()\n"
    "    print(u.pk, s.session_key)\n"
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def connect(server, path: str, session: str | None = None, tuned: bool = False):
    return websockets.connect(
        server.ws(path),
        origin=f"http://127.0.0.1:{server.port}",
        additional_headers={"Cookie": f"sessionid={session}"} if session else None,
        subprotocols=[websockets.Subprotocol("channels-tuning.v1")] if tuned else None,
        max_queue=None,
    )


async def subscribe_rate(server, tuned: bool, clients: int, rounds: int) -> dict:
    path = "/ws/tuned-topics/" if tuned else "/ws/plain-topics/"
    kind = "ct." if tuned else ""
    sockets = [await connect(server, path, tuned=tuned) for _ in range(clients)]
    latencies: list[float] = []

    async def one(n: int, ws) -> None:
        for k in range(rounds):
            for action in ("subscribe", "unsubscribe"):
                request = {"type": kind + action, "id": 2 * k + 1, "topic": f"bench.{n}.{k}"}
                began = time.perf_counter()
                await ws.send(json.dumps(request))
                answer = json.loads(await ws.recv())
                latencies.append(time.perf_counter() - began)
                assert answer["topic"] == request["topic"], answer

    cpu_before, began = cpu_seconds(server.app_pid), time.perf_counter()
    await asyncio.gather(*(one(n, ws) for n, ws in enumerate(sockets)))
    elapsed, cpu = time.perf_counter() - began, cpu_seconds(server.app_pid) - cpu_before
    for ws in sockets:
        await ws.close()
    requests = len(latencies)
    return {
        "requests/s": requests / elapsed,
        "µs CPU/request": cpu / requests * 1e6,
        "p50 ms": percentile(latencies, 0.5) * 1000,
        "p99 ms": percentile(latencies, 0.99) * 1000,
    }


async def user_sends(servers, env, tuned: bool, sends: int, layer) -> dict:
    ((pk, session),) = [
        line.split() for line in run_django(env, SESSIONS, "1", f"s{tuned:d}").splitlines()
    ]
    path = "/ws/tuned-topics/" if tuned else "/ws/plain-topics/"
    tabs = [await connect(server, path, session, tuned=tuned) for server in servers]
    await asyncio.sleep(0.5)  # the memberships are in Redis
    latencies: list[float] = []
    if tuned:
        from channels_tuning.users import send_to_user
    for n in range(sends):
        began = time.perf_counter()
        text = f"notice {n}"
        if tuned:
            report = await send_to_user(int(pk), text, layer=layer)
            assert report.receivers == 2, report
        else:
            await layer.group_send(f"plainuser.{pk}", {"type": "notify", "text": text})
        for tab in tabs:
            assert await asyncio.wait_for(tab.recv(), 5) == text
        latencies.append(time.perf_counter() - began)
    for tab in tabs:
        await tab.close()
    return {
        "p50 ms": percentile(latencies, 0.5) * 1000,
        "p99 ms": percentile(latencies, 0.99) * 1000,
    }


async def disconnects(servers, env, tuned: bool, users: int, layer) -> dict:
    rows = run_django(env, SESSIONS, str(users), f"d{tuned:d}x").splitlines()
    path = "/ws/tuned-topics/" if tuned else "/ws/plain-topics/"
    tabs = []
    for line in rows:
        _, session = line.split()
        tabs += [await connect(server, path, session, tuned=tuned) for server in servers]
    await asyncio.sleep(1.0)
    if tuned:
        from channels_tuning.users import disconnect_user

    def cpu() -> float:
        return sum(cpu_seconds(server.app_pid) for server in servers)

    cpu_before, began = cpu(), time.perf_counter()
    for line in rows:
        pk = int(line.split()[0])
        if tuned:
            await disconnect_user(pk, layer=layer)
        else:
            await layer.group_send(f"plainuser.{pk}", {"type": "force.disconnect"})
    await asyncio.wait_for(asyncio.gather(*(tab.wait_closed() for tab in tabs)), 30)
    elapsed = time.perf_counter() - began
    await asyncio.sleep(1.0)  # the servers' cleanups (group_discard) end
    codes = {tab.close_code for tab in tabs}
    assert codes == {4003}, codes
    return {"µs CPU/call": (cpu() - cpu_before) / users * 1e6, "all closed s": elapsed}


async def memory(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ct-topics-"))
    redis = start_redis(tmp)
    server = start_daphne(tmp, tuned=True, redis=redis, tuning=QUIET)

    def redis_memory() -> int:
        info = redis.cli("INFO", "memory")
        return int(
            next(line for line in info.splitlines() if line.startswith("used_memory:")).split(":")[
                1
            ]
        )

    try:
        await asyncio.sleep(1.0)
        rss, used = server.rss_kb(), redis_memory()
        for round in (1, 2):  # the second: is what the first left reused, or more kept?
            sockets = [
                await connect(server, "/ws/tuned-topics/", tuned=True) for _ in range(args.clients)
            ]

            async def hold(n: int, ws) -> None:
                for k in range(args.per_client):
                    request = {"type": "ct.subscribe", "id": k + 1, "topic": f"bench.{n}.{k}"}
                    await ws.send(json.dumps(request))
                    assert json.loads(await ws.recv())["kind"] == "subscribed"

            await asyncio.gather(*(hold(n, ws) for n, ws in enumerate(sockets)))
            await asyncio.sleep(1.0)
            count = args.clients * args.per_client
            grown_rss, grown_redis = server.rss_kb() - rss, redis_memory() - used
            for ws in sockets:
                await ws.close()
            await asyncio.sleep(3.0)
            left_rss, left_redis = server.rss_kb() - rss, redis_memory() - used
            print(
                f"\nround {round}: {args.clients} connections x {args.per_client} "
                f"subscriptions = {count}:\n"
                f"  server RSS +{grown_rss / 1024:.1f} MB "
                f"({grown_rss * 1024 / count:.0f} B per subscription), "
                f"Redis +{grown_redis / 1e6:.1f} MB "
                f"({grown_redis / count:.0f} B per subscription)\n"
                f"  after every connection closed: server RSS {left_rss / 1024:+.1f} MB, "
                f"Redis {left_redis / 1e6:+.2f} MB (both from before round 1)"
            )
    finally:
        stop_process(server.proc)
        stop_process(redis.proc)


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ct-topics-"))
    redis = start_redis(tmp)
    results: dict[str, dict[str, dict]] = {}
    try:
        for tuned in (False, True):
            label = "channels-tuning" if tuned else "plain Channels"
            db = {"DJANGO_DB_PATH": str(tmp / f"db{tuned:d}.sqlite3"), "DJANGO_SECRET_KEY": "bench"}
            servers = [
                start_daphne(
                    tmp, tuned=tuned, redis=redis, tuning=QUIET, application=APPLICATION, **db
                )
                for _ in range(2)
            ]
            env = servers[0].env
            migrate(env)
            if tuned:
                from channels_tuning.layers import RedisChannelLayer

                layer = RedisChannelLayer(hosts=[redis.url])
            else:
                from channels_redis.core import RedisChannelLayer as PlainLayer

                layer = PlainLayer(hosts=[redis.url])
            try:
                results[label] = {
                    "subscribe+unsubscribe": await subscribe_rate(
                        servers[0], tuned, args.clients, args.rounds
                    ),
                    "send to a user's 2 tabs": await user_sends(
                        servers, env, tuned, args.sends, layer
                    ),
                    "disconnect a user's 2 tabs": await disconnects(
                        servers, env, tuned, args.users, layer
                    ),
                }
            finally:
                await layer.close_pools() if hasattr(layer, "close_pools") else None
                for server in servers:
                    stop_process(server.proc)
    finally:
        stop_process(redis.proc)
    print(
        f"\n{args.clients} clients x {args.rounds} subscribe/unsubscribe; {args.sends} sends "
        f"to one user's 2 tabs on 2 servers; {args.users} users x 2 tabs disconnected"
    )
    plain, tuned = results["plain Channels"], results["channels-tuning"]
    for row in plain:
        print(f"\n{row}")
        for metric in plain[row]:
            a, b = plain[row][metric], tuned[row][metric]
            print(f"  {metric:16} plain {a:10.1f}   tuned {b:10.1f}   tuned/plain {b / a:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--memory", action="store_true", help="memory per subscription")
    parser.add_argument("--per-client", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(memory(args) if args.memory else run(args))


if __name__ == "__main__":
    main()
