"""The README's quickstart runs as written (unit level; the end-to-end burst through
the same code path is in the group-send tests)."""

from __future__ import annotations

import re
from pathlib import Path

from channels.testing import WebsocketCommunicator
from django.test import override_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> tuple[dict, str]:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    settings_part, consumers_part = code.split("# consumers.py")
    tuning = re.search(r"CHANNELS_TUNING = (\{.*\})", settings_part).group(1)
    return eval(tuning), consumers_part  # the README's own literal


async def test_quickstart_consumer_chats_as_written():
    tuning, source = quickstart()
    namespace: dict = {}
    exec(compile(source, "README.md#quickstart", "exec"), namespace)
    chat = namespace["ChatConsumer"]
    with override_settings(CHANNELS_TUNING={**tuning, "STATS_BACKEND": None}):
        alice = WebsocketCommunicator(chat.as_asgi(), "/ws/chat/")
        bob = WebsocketCommunicator(chat.as_asgi(), "/ws/chat/")
        assert (await alice.connect())[0] and (await bob.connect())[0]
        await alice.send_json_to({"text": "hello"})
        assert await alice.receive_json_from(timeout=2) == {"text": "hello"}
        assert await bob.receive_json_from(timeout=2) == {"text": "hello"}
        await alice.disconnect()
        await bob.disconnect()


def test_server_guarantee_table_is_the_code_and_each_row_has_its_test():
    from channels_tuning.servers.guarantees import GUARANTEES, markdown_table

    assert markdown_table() in README.read_text()
    tests = (README.parent / "tests" / "test_servers_e2e.py").read_text()
    # The module is parametrized over every server, so each row's test runs on each.
    assert 'pytest.mark.parametrize("server", SERVERS)' in tests
    for guarantee in GUARANTEES:
        assert f"async def {guarantee.test}(" in tests, guarantee.title
