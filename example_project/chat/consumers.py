"""The demo's consumers: a chat room per URL, and an echo endpoint."""

from channels_tuning import CloseCode, TunedJsonWebsocketConsumer, TunedWebsocketConsumer
from channels_tuning.broadcast import broadcast


class ChatConsumer(TunedJsonWebsocketConsumer):
    """Join ``chat.<room>``; every message a client sends is broadcast to the room."""

    async def connect(self):
        self.room_group = "chat." + self.scope["url_route"]["kwargs"]["room"]
        # Left automatically when the connection ends, however it ends.
        await self.join_group(self.room_group)
        await self.accept()

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):  # any JSON value parses; only objects are ours
            self.close_nowait(CloseCode.INVALID_PAYLOAD, "a JSON object expected")
            return
        text = str(content.get("message", ""))[:1000]
        # Encoded once here; every member's process queues the same frame.
        await broadcast(self.room_group, {"type": "message", "message": text})


class EchoConsumer(TunedWebsocketConsumer):
    """Send every frame back as it came."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)
