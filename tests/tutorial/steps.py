"""The package's tutorial (docs/tutorial.md), applied to Channels' published tutorial
chat one step at a time, exactly as the tutorial says: each step is the settings and
server it names and the edits it shows, made to the published ``consumers.py`` text
(``tests/e2e/test_tutorial.py`` checks that every edit's new text is in the
tutorial, so the two cannot drift apart)."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PUBLISHED = Path(__file__).parent / "published"

#: Step 1: the base class.
SWAP_BASE = (
    (
        "from channels.generic.websocket import AsyncWebsocketConsumer",
        "from channels_tuning import TunedWebsocketConsumer",
    ),
    ("class ChatConsumer(AsyncWebsocketConsumer):", "class ChatConsumer(TunedWebsocketConsumer):"),
)
#: Step 3: the frame encoded once, no handler per member.
BROADCAST = (
    (
        "from channels_tuning import TunedWebsocketConsumer",
        "from channels_tuning import TunedWebsocketConsumer\n"
        "from channels_tuning.broadcast import broadcast",
    ),
    (
        """        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )""",
        """        await broadcast(self.room_group_name, {"message": message})""",
    ),
)

CHANNELS_REDIS = "channels_redis.core.RedisChannelLayer"
TUNED_REDIS = "channels_tuning.layers.RedisChannelLayer"
#: Step 4's settings: Channels' group names (chat_<room>) have history and presence.
HISTORY_AND_PRESENCE = {
    "HISTORY": {"chat_*": {"size": 500, "ttl": 3600}},
    "PRESENCE": {"chat_*": {"events": True}},
}


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    server: str  # tests.support.processes.SERVERS
    layer: str
    edits: tuple[tuple[str, str], ...] = ()
    tuning: dict[str, Any] = field(default_factory=dict)


STEPS = (
    Step(0, "Channels' tutorial as published", "daphne", CHANNELS_REDIS),
    Step(1, "the base class swapped", "daphne", CHANNELS_REDIS, SWAP_BASE),
    Step(2, "served by channels-tuning-daphne", "tuned", CHANNELS_REDIS, SWAP_BASE),
    Step(3, "the tuned layer and broadcast()", "tuned", TUNED_REDIS, SWAP_BASE + BROADCAST),
    Step(
        4,
        "history and presence",
        "tuned",
        TUNED_REDIS,
        SWAP_BASE + BROADCAST,
        HISTORY_AND_PRESENCE,
    ),
)


def consumer_source(step: Step) -> str:
    source = (PUBLISHED / "consumers.py").read_text()
    for old, new in step.edits:
        if old not in source:
            raise ValueError(f"step {step.number}: {old!r} is not in the consumer")
        source = source.replace(old, new)
    return source


def consumer_module(step: Step) -> types.ModuleType:
    """The step's ``chat/consumers.py``, as a module."""
    module = types.ModuleType("chat_consumers", f"tutorial step {step.number}")
    exec(compile(consumer_source(step), f"<tutorial step {step.number}>", "exec"), module.__dict__)
    return module
