"""The example project's application plus consumers and a stats view that the
end-to-end tests need. Served by real daphne processes (see conftest.py)."""

import asyncio
import collections
import gc
import itertools
import json
import os
import re
import socket
import sys
import tracemalloc
import weakref
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

from channels.auth import AuthMiddlewareStack
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.asgi import get_asgi_application
from django.urls import re_path
from google.protobuf.wrappers_pb2 import StringValue

django_asgi_app = get_asgi_application()

from channels_tuning import (
    Lifespan,
    Topic,
    TunedJsonWebsocketConsumer,
    TunedProtobufWebsocketConsumer,
    TunedURLRouter,
    TunedWebsocketConsumer,
    rpc,
)
from channels_tuning.addresses import client_address
from channels_tuning.broadcast import broadcast
from channels_tuning.core.tokens import TokenBucket
from channels_tuning.observability.gctuning import monitor
from channels_tuning.observability.snapshot import compat_status
from channels_tuning.runtime import counters as stats
from channels_tuning.runtime.registry import registry
from example_project.chat.consumers import DashboardConsumer, EchoConsumer
from example_project.chat.routing import websocket_urlpatterns

# GC pauses are measured for plain Channels consumers too (benchmarks/gc_pause.py).
monitor.install()


class WhoAmIConsumer(TunedWebsocketConsumer):
    """Says whom the connection counts against: the address the server saw (behind a
    proxy: the one its headers gave) and the per-user limit's key."""

    heartbeat_interval = None

    async def connect(self) -> None:
        await self.accept()
        address = client_address(self.scope)
        await self.send(text_data=json.dumps([address, self.connection_owner()]))


class BinaryOnlyConsumer(TunedWebsocketConsumer):
    accept_text_frames = False
    heartbeat_binary = True

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(bytes_data=bytes_data)


class LimitedConsumer(EchoConsumer):
    max_connections_per_consumer = 3


class GroupConsumer(TunedWebsocketConsumer):
    """Joins the group named in the URL; ``{"join": g}``, ``{"join_many": [g, ...]}`` and
    ``{"leave": g}`` change it."""

    async def connect(self):
        await self.join_group(self.scope["url_route"]["kwargs"]["group"])
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        command = json.loads(text_data)
        if "join" in command:
            await self.join_group(command["join"])
        for group in command.get("join_many", ()):
            await self.join_group(group)
        if "leave" in command:
            await self.leave_group(command["leave"])
        if "crash" in command:
            raise RuntimeError("handler failure requested by the test")
        await self.send(text_data="ok")

    async def relay(self, event):
        await self.send(text_data=event["text"])


class SlowHandlerConsumer(TunedWebsocketConsumer):
    """Takes 5 ms per message: a client can send faster than it is handled."""

    async def receive(self, text_data=None, bytes_data=None):
        await asyncio.sleep(0.005)


class SlowAcceptConsumer(TunedWebsocketConsumer):
    """Accepts 3 s after the upgrade (a slow authentication, a query in connect)."""

    async def connect(self):
        await asyncio.sleep(3)
        await self.accept()


class PausingConsumer(TunedWebsocketConsumer):
    """Echoes; ``"pause"`` keeps its handler busy 2 s (a slow group send, a query)
    while the client goes on sending."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "pause":
            await asyncio.sleep(2)
        await self.send(text_data=text_data)


class LeakyConsumer(TunedWebsocketConsumer):
    """Deliberately leaks: starts a task that outlives the connection and keeps the
    consumer alive (what ``wsstats --tasks`` and ``--check`` must reveal)."""

    async def connect(self):
        await self.accept()
        self.poller = asyncio.get_running_loop().create_task(self.poll_forever())

    async def poll_forever(self):
        while True:
            await asyncio.sleep(3600)


class ProtoConsumer(TunedProtobufWebsocketConsumer):
    """Protobuf echo (upper-cased) in the URL's group; "all:<text>" is broadcast to it."""

    message_class = StringValue

    async def connect(self):
        self.group = self.scope["url_route"]["kwargs"]["group"]
        await self.join_group(self.group)
        await self.accept()

    async def receive_message(self, message, received):
        if message.value.startswith("all:"):
            frame = self.codec.encode(StringValue(value=message.value[4:]), topic=self.group)
            await broadcast(self.group, frame)
            return
        await self.send_message(StringValue(value=message.value.upper()), seq=received.seq)

    @rpc("upper")
    async def upper(self, params):
        return str(params).upper()

    async def ask_page(self, event):
        """Asks the client (in protobuf envelopes), pushes what it answered, and says
        whether the push was acknowledged."""
        title = await self.request_client("page.title", event.get("params"))
        acknowledged = await self.send_with_ack(StringValue(value=f"the page says {title}"))
        await self.send_message(StringValue(value=f"acknowledged: {acknowledged}"))


class JsonPerConsumer(TunedWebsocketConsumer):
    """Joins the URL's group; each consumer encodes every event to JSON itself (the
    usual Channels pattern, for benchmarks/codec_fanout.py)."""

    async def connect(self):
        await self.join_group(self.scope["url_route"]["kwargs"]["group"])
        await self.accept()

    async def chat_message(self, event):
        await self.send(text_data=json.dumps(event["data"]))


class PlainGroupConsumer(AsyncWebsocketConsumer):
    """Plain Channels, for the benchmarks: joins the URL's group, relays events."""

    async def connect(self):
        plain_scopes.add(self)
        self.groups = [self.scope["url_route"]["kwargs"]["group"]]
        await self.channel_layer.group_add(self.groups[0], self.channel_name)
        await self.accept()

    async def relay(self, event):
        await self.send(text_data=event["text"])


class PlainTopicsConsumer(AsyncWebsocketConsumer):
    """Plain Channels, for benchmarks/topics.py: the hand-rolled "one socket, many
    streams" of Channels apps (no table, no authorization, no bounds), and a user's
    group joined in connect() for send-to-user and disconnect-user by group_send."""

    async def connect(self):
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.groups = [f"plainuser.{user.pk}"]
            await self.channel_layer.group_add(self.groups[0], self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        request = json.loads(text_data)
        topic = request["topic"]
        if request["type"] == "subscribe":
            await self.channel_layer.group_add(topic, self.channel_name)
            answer = {"kind": "subscribed", "topic": topic, "id": request["id"]}
        else:
            await self.channel_layer.group_discard(topic, self.channel_name)
            answer = {"kind": "unsubscribed", "topic": topic, "id": request["id"]}
        await self.send(text_data=json.dumps(answer))

    async def notify(self, event):
        await self.send(text_data=event["text"])

    async def force_disconnect(self, event):
        await self.close(code=4003)


class TunedTopicsConsumer(TunedWebsocketConsumer):
    """The package's topics, for benchmarks/topics.py: public rows, no request rate."""

    topics = [Topic("bench.{a}.{b}", public=True)]
    subscribe_rate = TokenBucket(rate=1e9, burst=1e9)
    max_subscriptions = 1000


class SlowDisconnectConsumer(TunedWebsocketConsumer):
    """Its disconnect handler takes 60 s: only a drain deadline or a second signal ends it."""

    async def disconnect(self, code):
        await asyncio.sleep(60)


class BurstConsumer(TunedWebsocketConsumer):
    """On "N", sends N numbered 1 KiB frames at once, keyed i % 3 for ``coalesce``.

    The burst is synchronous, so the tuned server's transport passes its 64 KiB
    high-water mark during it and the rest meets the 10-message queue."""

    heartbeat_interval = None
    send_queue_max_messages = 10

    async def receive(self, text_data=None, bytes_data=None):
        for i in range(int(text_data)):
            await self.send(text_data=f"{i:06d}" + "x" * 1018, coalesce_key=i % 3)


class QuickDashboardConsumer(DashboardConsumer):
    """The example's dashboard, asking about held subscriptions every second and
    waiting a second for its pages' answers; ``echo`` answers with its params."""

    authorization_ttl = 1.0
    client_request_timeout = 1.0

    @rpc("echo")
    async def echo(self, params):
        return params


class PlainRequestConsumer(AsyncJsonWebsocketConsumer):
    """Request/reply as Channels applications write it by hand (a ``request_id`` in
    the JSON, as djangochannelsrestframework does): the requests benchmark's baseline."""

    async def receive_json(self, content, **kwargs):
        if content.get("action") == "echo":
            await self.send_json({"request_id": content["request_id"], "data": content["data"]})


class TunedRequestConsumer(TunedJsonWebsocketConsumer):
    """One ``@rpc`` method that answers with its params (the requests benchmark)."""

    heartbeat_interval = None

    @rpc("echo")
    async def echo(self, params):
        return params


def readme_quickstart_consumer() -> type:
    """The README's quickstart ChatConsumer, exactly as written there."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code.split("# consumers.py")[1], "README.md#quickstart", "exec"), namespace)
    return namespace["ChatConsumer"]


ReadmeChatConsumer = readme_quickstart_consumer()


BURST_CONSUMERS = {
    policy: type(f"Burst_{policy}", (BurstConsumer,), {"overflow_policy": policy})
    for policy in ("disconnect", "drop_oldest", "drop_newest", "coalesce")
}


def send_buffers() -> list[int]:
    """SO_SNDBUF of each tuned connection's socket on the tuned server (the kernel
    reports twice the size set)."""
    sizes = []
    for consumer in registry:
        protocol = getattr(consumer.base_send, "protocol", None)
        # A connection whose socket is already closed (its consumer not yet cleaned
        # up) has none: Twisted deletes the attribute in connectionLost.
        handle = getattr(getattr(protocol, "transport", None), "socket", None)
        if handle is not None:
            sizes.append(handle.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    return sizes


def protocol_dict_sizes() -> dict[str, int]:
    """Attributes and bytes of the first tuned connection's WebSocket protocol
    instance ``__dict__`` (daphne's protocol on autobahn's): most of an idle
    connection's memory on a Twisted server."""
    for consumer in registry:
        protocol = getattr(consumer.base_send, "protocol", None)
        if protocol is not None:
            return {
                "attributes": len(vars(protocol)),
                "bytes": sys.getsizeof(vars(protocol)),
                "handshake_headers": len(protocol.http_headers),
                "send_queue": type(protocol.send_queue).__name__,
            }
    return {}


#: The open PlainGroupConsumers: what a plain Channels consumer's scope holds.
plain_scopes: weakref.WeakSet[AsyncWebsocketConsumer] = weakref.WeakSet()


def distinct_host_pairs(consumers: list) -> int:
    return len({id(p) for c in consumers for p in c.scope["headers"] if p[0] == b"host"})


def held_per_connection() -> dict[str, object]:
    """What the connections hold for their whole life: the coroutines the tuned ones'
    tasks run, and how many distinct ``host`` header pairs the scopes of the tuned and
    of the plain PlainGroupConsumers keep."""
    consumers = list(registry)
    return {
        "task_runs": sorted(
            {c._frames_task.get_coro().__qualname__ for c in consumers if c._frames_task}
        ),
        "host_pairs": distinct_host_pairs(consumers),
        "plain_host_pairs": distinct_host_pairs(list(plain_scopes)),
    }


def traced_by_file() -> dict[str, int]:
    """Bytes held by allocation site ("file:line") when tracemalloc runs
    (CHANNELS_TUNING["TRACEMALLOC"]): where the memory of a connection is
    (benchmarks/connections.py --breakdown)."""
    if not tracemalloc.is_tracing():
        return {}
    return {
        f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}": stat.size
        for stat in tracemalloc.take_snapshot().statistics("lineno")
    }


def due_checker_work() -> dict | None:
    """The tuned server's periodic loops: connections each looked at, and how many
    daphne tracks (None under another server)."""
    checkers = sys.modules.get("channels_tuning.servers.daphne.checkers")
    return dict(checkers.WORK) if checkers is not None else None


def reference_cycles(objects: list) -> list[str]:
    """One shortest reference cycle per type among ``objects`` (cyclic garbage), as
    "Type.attribute -> Type[key] -> ...": what keeps a closed connection for the
    collector."""
    members = {id(obj) for obj in objects}

    def edge(holder, held) -> str:
        for name, value in (getattr(holder, "__dict__", None) or {}).items():
            if value is held:
                return f".{name}"
        if isinstance(holder, dict):
            return next((f"[{key!r}]" for key, value in holder.items() if value is held), "")
        return "[i]" if isinstance(holder, (list, tuple)) else ""

    cycles, seen_types = [], set()
    for start in objects:
        kind = type(start).__qualname__
        if kind in seen_types or isinstance(start, (list, tuple, dict)):
            continue
        seen_types.add(kind)
        came_from = {id(start): None}
        frontier, last = [start], None
        while frontier and last is None:
            following = []
            for obj in frontier:
                for referent in gc.get_referents(obj):
                    if referent is start:
                        last = obj
                        break
                    if id(referent) in members and id(referent) not in came_from:
                        came_from[id(referent)] = obj
                        following.append(referent)
                if last is not None:
                    break
            frontier = following
        if last is None:
            continue
        path = [last]
        while path[-1] is not start:
            path.append(came_from[id(path[-1])])
        path = [*reversed(path), start]
        steps = (type(a).__qualname__ + edge(a, b) for a, b in itertools.pairwise(path))
        cycles.append(" -> ".join(steps))
    return cycles


def tracked_objects() -> tuple[int, dict[str, int]]:
    """How many objects the collector tracks (frozen ones aside), and the commonest types."""
    objects = gc.get_objects()
    try:
        types = collections.Counter(type(o).__qualname__ for o in objects)
        return len(objects), dict(types.most_common(25))
    finally:
        # The list holds every tracked object. Kept as a local of the stats coroutine
        # (a first version), it held that coroutine's frame on Python 3.10 and so
        # itself: a reference cycle, and every object that died meanwhile reached the
        # collector as garbage (88 per closed connection in the reference-cycle test
        # of tests/e2e/test_gc.py). Emptied, it frees nothing late on any version.
        objects.clear()


async def stats_app(scope, receive, send):
    """GET /_stats: what the tests assert about this process (JSON)."""
    if scope["type"] != "http":
        return
    await receive()
    unreachable = garbage = None
    if scope["query_string"] == b"gc=1":
        unreachable = gc.collect()
    if scope["query_string"] == b"gc=freeze":
        # What the package's collector rounds do: collect, then freeze what lives.
        unreachable = gc.collect()
        gc.freeze()
    if scope["query_string"] == b"gc=unfreeze":
        # What a full collection of everything, frozen objects included, finds
        # unreachable: the cyclic garbage a gc.freeze() would otherwise keep.
        gc.unfreeze()
        unreachable = gc.collect()
    if scope["query_string"] == b"gc=save":
        # From now on every collection, CPython's own or the package's, keeps what it
        # finds in gc.garbage (DEBUG_SAVEALL) for "gc=garbage" to report.
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
    if scope["query_string"] == b"gc=garbage":
        # The cyclic garbage found since "gc=save" (frozen objects included): what
        # reference counting could not free.
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        gc.set_debug(0)
        unreachable = len(gc.garbage)
        garbage = {
            "types": dict(collections.Counter(type(o).__qualname__ for o in gc.garbage)),
            "cycles": reference_cycles(gc.garbage),
        }
        gc.garbage.clear()
    if scope["query_string"] == b"reset_gc_max=1":
        monitor.pause_max = [0.0, 0.0, 0.0]  # longest pauses from now on
    refreeze = False
    if scope["query_string"] == b"gc=all":
        # A collection, and the frozen objects counted by type too: gc.get_objects()
        # leaves them out, and the freeze rounds take an idle connection's objects
        # there. Frozen again afterwards, with what was made since.
        unreachable = gc.collect()
        refreeze = gc.get_freeze_count() > 0
        gc.unfreeze()
    # Each walked once: gc.get_objects() copies every tracked object into a list, and
    # the frozen count walks the permanent generation (130 ms at 19 000 connections).
    tracked, tracked_types = tracked_objects()
    gc_figures = monitor.snapshot(frozen=True)  # before the refreeze: nothing counted twice
    if refreeze:
        gc.freeze()
    body = json.dumps(
        {
            "pid": os.getpid(),
            "unreachable": unreachable,
            "garbage": garbage,
            "connections": len(registry),
            "tasks": len(asyncio.all_tasks()),
            "task_groups": [  # what wsstats --check judges, this request's task aside
                {"coroutine": getattr(task.get_coro(), "__qualname__", repr(task)), "count": 1}
                for task in asyncio.all_tasks()
                if task is not asyncio.current_task()
            ],
            "gc_objects": tracked,
            # Frozen objects too (gc.get_objects() leaves them out): what a connection
            # costs the collector's bookkeeping once the freeze rounds have taken it.
            "gc_tracked": tracked + gc_figures["frozen"],
            "gc_types": tracked_types,
            "counters": stats.snapshot(),
            "gc": gc_figures,
            "compat": compat_status(),
            "due_checkers": due_checker_work(),
            "send_buffers": send_buffers(),
            "traced": traced_by_file(),
            "protocol_dict": protocol_dict_sizes(),
            "held_per_connection": held_per_connection(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def ping_app(scope, receive, send):
    """GET /_ping: the cheapest answer the server can give (the stall probe's)."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"pong"})


async def http_app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/_stats":
        return await stats_app(scope, receive, send)
    if scope["type"] == "http" and scope["path"] == "/_ping":
        return await ping_app(scope, receive, send)
    return await django_asgi_app(scope, receive, send)


websocket_router = TunedURLRouter(
    [
        *websocket_urlpatterns,
        re_path(r"^ws/binary/$", BinaryOnlyConsumer.as_asgi()),
        re_path(r"^ws/whoami/$", WhoAmIConsumer.as_asgi()),
        re_path(r"^ws/limited/$", LimitedConsumer.as_asgi()),
        re_path(r"^ws/leaky/$", LeakyConsumer.as_asgi()),
        re_path(r"^ws/json-per-consumer/(?P<group>[\w.-]+)/$", JsonPerConsumer.as_asgi()),
        re_path(r"^ws/proto/(?P<group>[\w.-]+)/$", ProtoConsumer.as_asgi()),
        re_path(r"^ws/slow-handler/$", SlowHandlerConsumer.as_asgi()),
        re_path(r"^ws/pausing/$", PausingConsumer.as_asgi()),
        re_path(r"^ws/slow-accept/$", SlowAcceptConsumer.as_asgi()),
        re_path(r"^ws/slow-disconnect/$", SlowDisconnectConsumer.as_asgi()),
        *(
            re_path(rf"^ws/burst/{policy}/$", consumer.as_asgi())
            for policy, consumer in BURST_CONSUMERS.items()
        ),
        re_path(r"^ws/plain-group/(?P<group>[\w.-]+)/$", PlainGroupConsumer.as_asgi()),
        re_path(r"^ws/group/(?P<group>[\w.-]+)/$", GroupConsumer.as_asgi()),
        re_path(r"^ws/readme-chat/$", ReadmeChatConsumer.as_asgi()),
        re_path(r"^ws/dashboard-quick/$", QuickDashboardConsumer.as_asgi()),
        re_path(r"^ws/plain-rpc/$", PlainRequestConsumer.as_asgi()),
        re_path(r"^ws/tuned-rpc/$", TunedRequestConsumer.as_asgi()),
        re_path(r"^ws/plain-topics/$", PlainTopicsConsumer.as_asgi()),
        re_path(r"^ws/tuned-topics/$", TunedTopicsConsumer.as_asgi()),
    ]
)

application = ProtocolTypeRouter(
    {"lifespan": Lifespan(), "http": http_app, "websocket": websocket_router}
)

#: The same consumers behind the stack Channels' tutorial deploys (its session wrapper
#: wraps ``send``): ``tests.e2e_asgi:application_behind_auth``.
application_behind_auth = ProtocolTypeRouter(
    {
        "lifespan": Lifespan(),
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(websocket_router)),
    }
)

#: Behind token authentication (and sessions): ``tests.e2e_asgi:application_with_tokens``.
from channels_tuning.auth import TokenAuthMiddleware

application_with_tokens = ProtocolTypeRouter(
    {
        "lifespan": Lifespan(),
        "http": http_app,
        "websocket": AuthMiddlewareStack(TokenAuthMiddleware(websocket_router)),
    }
)
