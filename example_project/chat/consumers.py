"""The demo's consumers: a chat room per URL, a dashboard of topics, an echo endpoint."""

from channels.db import database_sync_to_async

from channels_tuning import (
    CloseCode,
    RequestError,
    Topic,
    TunedJsonWebsocketConsumer,
    TunedWebsocketConsumer,
    rpc,
)
from channels_tuning.broadcast import broadcast
from channels_tuning.exceptions import ClientRequestFailed
from channels_tuning.layers.presence import presence_policy
from channels_tuning.presence import presence


class ChatConsumer(TunedJsonWebsocketConsumer):
    """Join ``chat.<room>``; every message a client sends is broadcast to the room.

    Rooms have history and presence (``HISTORY`` and ``PRESENCE`` in the settings): a
    client that reconnects gets what it missed, and the page lists who is online (the
    list at connect, then the room's coalesced join/leave events)."""

    async def connect(self):
        self.room_group = "chat." + self.scope["url_route"]["kwargs"]["room"]
        # Left automatically when the connection ends, however it ends.
        await self.join_group(self.room_group)
        await self.accept()
        if presence_policy(self.room_group) is not None:  # not on the pub/sub layer
            online = sorted({entry.identity for entry in await presence(self.room_group)})
            await self.send_json({"type": "online", "who": online})

    def presence_identity(self):
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return user.get_username()
        return "guest-" + self.channel_name[-6:]

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):  # any JSON value parses; only objects are ours
            self.close_nowait(CloseCode.INVALID_PAYLOAD, "a JSON object expected")
            return
        text = str(content.get("message", ""))[:1000]
        # Encoded once here; every member's process queues the same frame.
        await broadcast(self.room_group, {"type": "message", "message": text})


class DashboardConsumer(TunedJsonWebsocketConsumer):
    """One socket, many topics: the client subscribes to what it shows.

    - ``ticker``: public, with the latest price sent on subscribe (cache mode: the
      ``HISTORY`` of ``ticker`` in the settings keeps it);
    - ``user.<pk>``: a user's private notices, to that user only;
    - ``desk.<name>``: a team's feed, to members of the Django group ``desk-<name>``
      (asked again every ``authorization_ttl`` seconds: a user removed from the group
      is unsubscribed within a minute, or at once with ``unsubscribe_user()``).

    The page asks which desks it may follow with a request (``desk.list``); the server
    pushes alerts the page must confirm and asks the page what it shows
    (``dashboard_alert``).
    """

    topics = [
        Topic("ticker", public=True, cache=1),
        Topic("user.{user_id}"),
        Topic("desk.{name}"),
    ]
    max_subscriptions = 20
    #: Seconds the page has to confirm an alert or say what it shows.
    client_request_timeout = 5.0

    async def can_subscribe(self, user, scope, topic):
        if topic.topic.public:
            return True
        if user is None or not user.is_authenticated:
            return "login required"
        if topic.topic.pattern == "user.{user_id}":
            return topic.args["user_id"] == str(user.pk)
        return await database_sync_to_async(_in_group)(user, f"desk-{topic.args['name']}")

    @rpc("desk.list")
    async def desk_list(self, params):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise RequestError("login_required", "sign in to see your desks")
        return await database_sync_to_async(_desks)(user)

    async def dashboard_alert(self, event):
        """An alert every page of a user must confirm, sent to the user's connections by
        ``send_to_group(user_group(pk), {"type": "dashboard.alert", "text": ...})``:
        pushed with ``send_with_ack()`` (True once the page handled it), then the page
        is asked what it shows (its ``page.state`` handler), and told what the server
        saw. A layer event runs in its own task, so it may wait for the page."""
        shown = await self.send_with_ack({"alert": str(event.get("text", ""))[:200]})
        try:
            page = await self.request_client("page.state")
        except ClientRequestFailed as failed:
            page = {"failed": failed.code}
        if not self.closing:
            await self.send_json({"alert_outcome": {"shown": shown, "page": page}})


def _desks(user):
    names = user.groups.filter(name__startswith="desk-").values_list("name", flat=True)
    return sorted(name.removeprefix("desk-") for name in names)


def _in_group(user, name):
    return user.groups.filter(name=name).exists()


class EchoConsumer(TunedWebsocketConsumer):
    """Send every frame back as it came."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)
