"""Small consumers shared by the unit-test modules (which never import each other)."""

from __future__ import annotations

import asyncio

from channels.testing import WebsocketCommunicator

from channels_tuning import TunedWebsocketConsumer
from channels_tuning.wire.subprotocol import SUBPROTOCOL


class Echo(TunedWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class Grouped(TunedWebsocketConsumer):
    groups = ["static-group"]
    disconnect_codes: list[int] = []

    async def connect(self):
        await self.join_group("dynamic-group")
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "crash":
            raise RuntimeError("boom")
        if text_data == "hang":
            await asyncio.sleep(3600)
        if text_data == "leave":
            await self.leave_group("dynamic-group")
            await self.send(text_data="left")

    async def relay(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        Grouped.disconnect_codes.append(code)


def communicator(
    consumer: type, path: str = "/ws/", *, tuned_client: bool = False
) -> WebsocketCommunicator:
    """Channels' communicator; ``tuned_client``: it offers the channels-tuning.v1
    subprotocol, as the package's clients do (heartbeat frames, envelopes)."""
    subprotocols = [SUBPROTOCOL] if tuned_client else None
    return WebsocketCommunicator(consumer.as_asgi(), path, subprotocols=subprotocols)
