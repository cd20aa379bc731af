"""send_to_user() and disconnect_user() on the in-memory layer, with Channels'
WebsocketCommunicator (the end-to-end proof across two servers and Redis is
tests/e2e/test_users.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from channels_tuning.layers.capabilities import require_valid_group_name
from channels_tuning.runtime.counters import CLOSES
from channels_tuning.runtime.registry import registry
from channels_tuning.users import (
    USER_GROUP_PREFIX,
    disconnect_on_logout,
    disconnect_user,
    send_to_user,
    user_group,
)
from channels_tuning.wire.closecodes import CloseCode
from channels_tuning.wire.reconnect import Reconnect, policy_for
from tests.support.consumers import Echo


@dataclass
class AUser:
    """What AuthMiddlewareStack puts in scope["user"], as far as the package reads it."""

    pk: object
    is_authenticated: bool = True


class NoUserGroup(Echo):
    user_groups = False


@pytest.fixture(autouse=True)
async def _no_leftover_connections():
    yield
    assert len(registry) == 0, registry.describe()


async def connected(user, consumer=Echo) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    return comm


async def expect_close(comm: WebsocketCommunicator, code: int) -> None:
    output = await comm.receive_output(timeout=2)
    assert (output["type"], output.get("code")) == ("websocket.close", code), output
    await comm.disconnect(code=code)


def test_user_group_names_are_valid_channels_group_names():
    layer = get_channel_layer()
    assert user_group(42) == "ct.user.42"
    assert user_group("6f1c2f4e-0d0b-4a57-9f5f-2a8b1f0e9b11").startswith(USER_GROUP_PREFIX)
    odd = user_group("Jean Dupont/é")
    assert odd.startswith("ct.user.sha.") and odd == user_group("Jean Dupont/é")
    for name in (user_group(42), odd, user_group("x" * 500)):
        require_valid_group_name(layer, name)  # Channels' check, whichever version


async def test_every_connection_of_a_user_gets_send_to_user_and_no_one_else():
    alice_tabs = [await connected(AUser(7)) for _ in range(2)]
    bob = await connected(AUser(8))
    anonymous = await connected(AUser(None, is_authenticated=False))
    report = await send_to_user(7, {"notice": "export ready"})
    assert report.delivered == 2
    for tab in alice_tabs:
        assert await tab.receive_json_from(timeout=1) == {"notice": "export ready"}
    assert await bob.receive_nothing(timeout=0.1)
    assert await anonymous.receive_nothing(timeout=0.01)
    for comm in (*alice_tabs, bob, anonymous):
        await comm.disconnect()
    assert not get_channel_layer().groups.get(user_group(7))  # left with the connections


async def test_disconnect_user_closes_every_tab_with_4003_and_reports_them():
    before = CLOSES.get(("Echo", str(int(CloseCode.USER_DISCONNECTED))))
    alice_tabs = [await connected(AUser(7)) for _ in range(3)]
    bob = await connected(AUser(8))
    report = await disconnect_user(7)
    assert report.delivered == 3
    for tab in alice_tabs:
        await expect_close(tab, 4003)
    assert await bob.receive_nothing(timeout=0.1)
    await bob.disconnect()
    assert CLOSES.get(("Echo", "4003")) - before == 3
    assert policy_for(4003) is Reconnect.STOP  # the package's clients stay away


async def test_disconnect_user_with_an_application_code_and_reason():
    tab = await connected(AUser(9))
    await disconnect_user(9, code=4100, reason="permissions changed")
    output = await tab.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4100, "reason": "permissions changed"}
    await tab.disconnect(code=4100)
    with pytest.raises(ValueError, match="1000 or 3000-4999"):
        await disconnect_user(9, code=1011)
    with pytest.raises(ValueError, match="123 bytes"):
        await disconnect_user(9, reason="é" * 62)


async def test_a_consumer_can_keep_out_of_user_groups():
    comm = await connected(AUser(7), consumer=NoUserGroup)
    assert (await send_to_user(7, "hello")).delivered == 0
    await comm.disconnect()


@override_settings(CHANNELS_TUNING={"USER_GROUPS": False, "SCHEDULER_TICK": 0.05})
async def test_user_groups_off_for_the_project():
    comm = await connected(AUser(7))
    assert (await send_to_user(7, "hello")).delivered == 0
    await comm.disconnect()


async def test_a_forged_disconnect_event_with_a_bad_code_still_closes_4003():
    tab = await connected(AUser(11))
    await get_channel_layer().group_send(
        user_group(11), {"type": "channels_tuning.disconnect", "code": 1006, "reason": 5}
    )
    await expect_close(tab, 4003)
    tab = await connected(AUser(11))
    await get_channel_layer().group_send(
        user_group(11), {"type": "channels_tuning.disconnect", "code": 4100, "reason": "é" * 99}
    )
    output = await tab.receive_output(timeout=2)
    assert output["code"] == 4100 and len(output["reason"].encode()) <= 123
    await tab.disconnect(code=4100)


async def test_logout_disconnects_when_asked_in_an_event_loop():
    tab = await connected(AUser(12))
    disconnect_on_logout(sender=None, request=None, user=AUser(12))  # off: nothing
    assert await tab.receive_nothing(timeout=0.1)
    with override_settings(CHANNELS_TUNING={"DISCONNECT_ON_LOGOUT": True, "SCHEDULER_TICK": 0.05}):
        disconnect_on_logout(sender=None, request=None, user=AUser(12))
        await expect_close(tab, 4003)


async def test_logout_disconnects_from_a_sync_view_thread():
    """A sync view's thread (what logout() runs in): the receiver waits for the send."""
    tab = await connected(AUser(13))
    with override_settings(CHANNELS_TUNING={"DISCONNECT_ON_LOGOUT": True, "SCHEDULER_TICK": 0.05}):
        from asgiref.sync import sync_to_async
        from django.contrib.auth.signals import user_logged_out

        await sync_to_async(user_logged_out.send)(sender=AUser, request=None, user=AUser(13))
        await expect_close(tab, 4003)
    await asyncio.sleep(0)
