"""One user's connections on every server: send_to_user() and disconnect_user() from a
third process, and a logout, against two tuned servers sharing a redis-server, with
users and sessions in the example project's SQLite database (Channels'
AuthMiddlewareStack resolves them at the handshake)."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
import websockets

from tests.support.processes import migrate, run_django, user_with_session
from tests.support.waiting import recv_data

APPLICATION = "tests.e2e_asgi:application_behind_auth"
QUIET = {"HEARTBEAT_INTERVAL": None, "IDLE_TIMEOUT": None, "RATE_LIMIT": None}


def start_two(daphne_factory, tmp_path, redis) -> list:
    db = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_SECRET_KEY": "users-test"}
    servers = [
        daphne_factory(tuned=True, redis=redis, tuning=QUIET, application=APPLICATION, **db)
        for _ in range(2)
    ]
    migrate(servers[0].env)
    return servers


def tab(server, session: str):
    """A browser tab of the session's user: its cookie, and the site's Origin."""
    return websockets.connect(
        server.ws("/ws/echo/"),
        origin=f"http://127.0.0.1:{server.port}",
        additional_headers={"Cookie": f"sessionid={session}"},
        close_timeout=1,
    )


async def closed_with(ws, timeout: float = 2.0) -> tuple[int | None, float]:
    """The close code the client got, and when (time.time())."""
    try:
        await asyncio.wait_for(ws.wait_closed(), timeout)
    except asyncio.TimeoutError:
        return None, time.time()
    return ws.close_code, time.time()


@pytest.mark.slow
async def test_send_to_user_and_disconnect_user_reach_every_tab_on_both_servers(
    daphne_factory, tmp_path, redis_or_cluster
):
    """On one Redis and on a Redis Cluster."""
    servers = start_two(daphne_factory, tmp_path, redis_or_cluster)
    env = servers[0].env
    alice, alice_session = user_with_session(env, "alice")
    _, bob_session = user_with_session(env, "bob")
    alice_tabs = [
        await tab(servers[0], alice_session),
        await tab(servers[0], alice_session),
        await tab(servers[1], alice_session),
    ]
    bob_tab = await tab(servers[1], bob_session)

    delivered = run_django(
        env,
        "import asyncio\nfrom channels_tuning.users import send_to_user\n"
        f"print(asyncio.run(send_to_user({alice}, 'for alice')).delivered)",
    )
    assert delivered == "3"
    assert [await recv_data(ws) for ws in alice_tabs] == ["for alice"] * 3
    await bob_tab.send("still here?")
    assert await recv_data(bob_tab) == "still here?"  # and nothing else before it

    # From a third process (a view, a Celery task): timed from the call. The closes are
    # watched while that process runs (its start and exit are not part of the time).
    watching = [asyncio.create_task(closed_with(ws, timeout=30)) for ws in alice_tabs]
    out = await asyncio.get_running_loop().run_in_executor(
        None,
        run_django,
        env,
        "import asyncio, time\nfrom channels_tuning.users import disconnect_user\n"
        f"started = time.time(); report = asyncio.run(disconnect_user({alice}))\n"
        "print(started, report.delivered)",
    )
    started, delivered = float(out.split()[0]), int(out.split()[1])
    closes = await asyncio.gather(*watching)
    print(
        f"disconnect_user: {delivered} tabs told, closed within "
        f"{max(at for _, at in closes) - started:.3f} s of the call"
    )
    assert delivered == 3
    assert [code for code, _ in closes] == [4003] * 3
    assert max(at for _, at in closes) - started < 1.0
    await bob_tab.send("and now?")
    assert await recv_data(bob_tab) == "and now?"
    await bob_tab.close()
    counted = sum(
        server.counter("channels_tuning_closes_total", "consumer=EchoConsumer,code=4003")
        for server in servers
    )
    assert counted == 3


@pytest.mark.slow
async def test_logging_out_closes_the_users_websockets_on_every_server(
    daphne_factory, tmp_path, redis_server
):
    """The example's DISCONNECT_ON_LOGOUT: a POST to its logout view on one server
    closes the user's tabs on both with 4003; another session of another user stays."""
    servers = start_two(daphne_factory, tmp_path, redis_server)
    env = servers[0].env
    _, carol_session = user_with_session(env, "carol")
    _, dave_session = user_with_session(env, "dave")
    carol_tabs = [await tab(servers[0], carol_session), await tab(servers[1], carol_session)]
    dave_tab = await tab(servers[0], dave_session)

    csrf = "c" * 32  # Django's CSRF check: the cookie and the header agree
    request = urllib.request.Request(
        f"http://127.0.0.1:{servers[1].port}/accounts/logout/",
        data=b"",
        method="POST",
        headers={
            "Cookie": f"sessionid={carol_session}; csrftoken={csrf}",
            "X-CSRFToken": csrf,
        },
    )
    opener = urllib.request.build_opener(NoRedirect)
    with opener.open(request, timeout=10) as response:
        assert response.status == 302
    assert [(await closed_with(ws))[0] for ws in carol_tabs] == [4003, 4003]
    await dave_tab.send("still in")
    assert await recv_data(dave_tab) == "still in"
    await dave_tab.close()
    # The session is gone: a new tab of it is anonymous (no user group to reach).
    async with tab(servers[0], carol_session) as anonymous:
        delivered = run_django(
            env,
            "import asyncio\nfrom channels_tuning.users import send_to_user\n"
            "from django.contrib.auth.models import User\n"
            "pk = User.objects.get(username='carol').pk\n"
            "print(asyncio.run(send_to_user(pk, 'x')).delivered)",
        )
        assert delivered == "0"
        await anonymous.send("anonymous now")
        assert await recv_data(anonymous) == "anonymous now"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

    def http_error_302(self, req, fp, code, msg, headers):
        return fp


@pytest.mark.slow
async def test_a_password_change_closes_the_users_websockets(
    daphne_factory, tmp_path, redis_server
):
    """The example's DISCONNECT_ON_PASSWORD_CHANGE: set_password() and save() in another
    process (a view, the admin) closes the user's tabs on both servers with 4003; a save
    that leaves the password alone does not."""
    servers = start_two(daphne_factory, tmp_path, redis_server)
    env = servers[0].env
    _, session = user_with_session(env, "frank")
    tabs = [await tab(servers[0], session), await tab(servers[1], session)]
    run_django(
        env,
        "from django.contrib.auth.models import User\n"
        "u = User.objects.get(username='frank'); u.first_name = 'Frank'; u.save()",
    )
    await tabs[0].send("still in")
    assert await recv_data(tabs[0]) == "still in"
    watching = [asyncio.create_task(closed_with(ws, timeout=30)) for ws in tabs]
    out = await asyncio.get_running_loop().run_in_executor(
        None,
        run_django,
        env,
        "import time\nfrom django.contrib.auth.models import User\n"
        "u = User.objects.get(username='frank'); u.set_password('a new one')\n"
        "started = time.time(); u.save(); print(started)",  # from the save, not the hashing
    )
    closes = await asyncio.gather(*watching)
    took = max(at for _, at in closes) - float(out)
    print(f"password change: tabs closed {took:.3f} s after save()")
    assert [code for code, _ in closes] == [4003, 4003]
    assert took < 1.0
