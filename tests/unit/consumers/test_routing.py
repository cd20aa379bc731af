"""TunedURLRouter: the consumer's coroutine started directly, Channels' routing kept."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.compatibility import guarantee_single_callable
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from django.urls import path, re_path

from channels_tuning import TunedURLRouter
from channels_tuning.compat import channels as channels_hooks


class RoomConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.send(text_data=repr(self.scope["url_route"]))


async def converse(router, scope):
    """Messages the application sends for a connect, then a disconnect."""
    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    sent = []

    async def send(message):
        sent.append(message)
        if message["type"] in ("websocket.send", "websocket.close", "http.response.body"):
            inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})

    await asyncio.wait_for(router(scope, inbox.get, send), 5)
    return sent


def websocket(path_: str) -> dict:
    return {"type": "websocket", "path": path_, "headers": [], "query_string": b""}


@pytest.fixture(params=["matched directly", "hook off"])
def route_by_path(request, monkeypatch):
    monkeypatch.setitem(channels_hooks.features, "route_by_path", request.param != "hook off")
    return request.param != "hook off"


async def test_a_consumer_route_runs_without_the_routers_coroutines(route_by_path):
    router = TunedURLRouter([re_path(r"^ws/room/(?P<name>\w+)/$", RoomConsumer.as_asgi())])
    awaitable = router(websocket("/ws/room/abc/"), None, None)
    # The consumer application's own coroutine (named after the consumer class), or,
    # with the hook off, the router's, as before.
    expected = "RoomConsumer" if route_by_path else "TunedURLRouter.route_connection"
    assert awaitable.__qualname__ == expected
    awaitable.close()
    sent = await converse(router, websocket("/ws/room/abc/"))
    assert [message["type"] for message in sent] == ["websocket.accept", "websocket.send"]
    assert sent[1]["text"] == "{'args': (), 'kwargs': {'name': 'abc'}}"


async def test_no_route_is_refused_quietly(route_by_path):
    router = TunedURLRouter([path("ws/room/", RoomConsumer.as_asgi())])
    sent = await converse(router, websocket("/elsewhere/"))
    assert sent == [{"type": "websocket.close", "code": 1000}]  # before accept: 403


async def test_nested_under_a_plain_router_lets_it_try_the_next_route(route_by_path):
    """Channels' nested routers raise Resolver404 so that the outer one tries its next
    route: a TunedURLRouter inside one still does."""
    inner = TunedURLRouter([path("only/", RoomConsumer.as_asgi())])
    outer = URLRouter([path("ws/", inner), re_path(r"^ws/(?P<rest>.+)/$", RoomConsumer.as_asgi())])
    sent = await converse(outer, websocket("/ws/other/"))
    assert sent[-1]["text"] == "{'args': (), 'kwargs': {'rest': 'other'}}"
    sent = await converse(outer, websocket("/ws/only/"))
    assert sent[-1]["text"] == "{'args': (), 'kwargs': {}}"


def test_servers_see_a_single_callable_coroutine_application():
    router = TunedURLRouter([path("ws/", RoomConsumer.as_asgi())])
    assert guarantee_single_callable(router) is router
    assert asyncio.iscoroutinefunction(router.__call__)
