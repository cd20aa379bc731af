"""The sans-I/O connection core, driven with a fake clock: no event loop, no Django.

Every policy, the state machine and the outbound queue's interplay with the
transport's writability are decided here; the consumer tests and end-to-end
tests check the I/O around it."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

import pytest

from channels_tuning.core import (
    AdmissionContext,
    ConnectionCore,
    ConnectionLimitPolicy,
    ConnectionSettings,
    ConnectionState,
    FrameTypePolicy,
    HeartbeatPolicy,
    LifetimePolicy,
    Liveness,
    MessageSizePolicy,
    Outcome,
    RateLimitPolicy,
    SendFrame,
    WriteClose,
)
from channels_tuning.core.policies import (
    BUILTIN_ORDER,
    FrameKind,
    PolicyChain,
    classify,
    ordered_policy_classes,
)
from channels_tuning.wire.heartbeat import (
    PING_BYTES,
    PING_TEXT,
    PING_TEXT_MESSAGE,
    PONG_BYTES,
    PONG_BYTES_MESSAGE,
    PONG_TEXT,
    PONG_TEXT_MESSAGE,
)

SETTINGS = ConnectionSettings(
    heartbeat_interval=10.0,
    idle_timeout=25.0,
    max_message_size=100,
    rate_limit=2.0,
    rate_burst=3.0,
    max_lifetime=None,
    send_queue_max_messages=3,
    send_queue_max_bytes=1000,
)


class Consumer:
    accept_text_frames = True
    accept_binary_frames = True
    heartbeat_binary = False


def text(payload: str) -> dict:
    return {"type": "websocket.receive", "text": payload}


def binary(payload: bytes) -> dict:
    return {"type": "websocket.receive", "bytes": payload}


def data(n: int) -> dict:
    return {"type": "websocket.send", "text": str(n)}


def make(
    settings: ConnectionSettings = SETTINGS, policies=BUILTIN_ORDER, consumer=Consumer, now=0.0
):
    chain = PolicyChain.build(ordered_policy_classes(policies), settings, consumer)
    core = ConnectionCore(settings, chain, now)
    core.accept(now)
    return core


def closes(core: ConnectionCore) -> list[int]:
    return [action.code for action in core.take_actions() if isinstance(action, WriteClose)]


def test_state_moves_forward_only():
    core = ConnectionCore(SETTINGS, PolicyChain([]), 0.0)
    assert core.state is ConnectionState.CONNECTING and not core.accepted
    core.accept(1.0)
    assert core.state is ConnectionState.OPEN and core.accepted_at == 1.0
    assert core.close(1000, "bye")
    assert core.state is ConnectionState.CLOSING and core.close_code == 1000
    assert not core.close(4000)  # a second close is ignored
    core.accept(2.0)
    assert core.state is ConnectionState.CLOSING
    assert core.take_actions() == [WriteClose(1000, "bye", False)]
    core.connection_lost()
    assert core.state is ConnectionState.CLOSED
    assert not core.receive_frame(text("late"), 3.0)


def test_refused_before_accept_goes_straight_to_closing():
    core = ConnectionCore(SETTINGS, PolicyChain([]), 0.0)
    assert core.close(1013, "full")
    assert core.state is ConnectionState.CLOSING and not core.accepted


def test_policy_order_is_the_documented_one_whatever_the_declaration_order():
    declared = [LifetimePolicy, HeartbeatPolicy, RateLimitPolicy, MessageSizePolicy]
    assert ordered_policy_classes(declared) == [
        FrameTypePolicy,
        MessageSizePolicy,
        RateLimitPolicy,
        HeartbeatPolicy,
        LifetimePolicy,
    ]
    settings = replace(SETTINGS, max_lifetime=60.0)
    chain = PolicyChain.build(ordered_policy_classes(declared), settings, Consumer)
    # FrameTypePolicy configures to None when both frame types are accepted: no cost.
    assert chain.names() == ["message_size", "rate_limit", "heartbeat", "lifetime"]
    assert [p.name for p in chain.tick] == ["heartbeat", "lifetime"]


def test_disabled_limits_are_not_in_the_chain():
    settings = replace(SETTINGS, max_message_size=None, rate_limit=None)
    chain = PolicyChain.build(BUILTIN_ORDER, settings, Consumer)
    assert chain.names() == ["heartbeat"]


def test_classify_heartbeat_frames():
    assert classify(text(PING_TEXT)) is FrameKind.PING
    assert classify(text(PONG_TEXT)) is FrameKind.PONG
    assert classify(binary(PING_BYTES)) is FrameKind.PING
    assert classify(binary(PONG_BYTES)) is FrameKind.PONG
    assert classify(text('{"type":"ct.pinx"}')) is FrameKind.DATA
    assert classify(binary(b"\x00\x0b")) is FrameKind.DATA


def test_frame_type_policy_closes_1003():
    class TextOnly(Consumer):
        accept_binary_frames = False

    core = make(consumer=TextOnly)
    assert core.receive_frame(text("ok"), 1.0)
    assert not core.receive_frame(binary(b"no"), 1.0)
    assert closes(core) == [1003]


def test_message_size_counts_utf8_bytes():
    core = make()
    assert core.receive_frame(text("é" * 50), 1.0)  # 100 bytes
    assert not core.receive_frame(text("é" * 51), 1.0)
    assert closes(core) == [1009]


def test_rate_limit_bucket_refills_with_the_clock():
    core = make()
    for _ in range(3):  # the burst
        assert core.receive_frame(text("m"), 0.0)
    assert core.receive_frame(text("m"), 0.5)  # refilled one token at 2/s
    assert not core.receive_frame(text("m"), 0.5)
    assert closes(core) == [1008]


def test_frames_queued_behind_a_busy_handler_are_charged_at_the_allowed_rate():
    """Rate 2/s, burst 3. The handler of a frame read at 0.0 is busy until 4.0; the
    server does not say when the frames read meanwhile arrived. An honest client's
    8 frames (2/s for 4 s) pass; its bucket is where it would have been."""
    core = make()
    assert core.receive_frame(text("m"), 0.0)
    charged = []
    for _ in range(8):
        at = core.queued_arrival(since=0.0, now=4.0)
        charged.append(at)
        assert core.receive_frame(text("m"), at)
    assert charged == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]  # never after the clock
    assert core.state is ConnectionState.OPEN
    assert core.tokens == pytest.approx(2.0)  # what it had after the first frame


def test_a_burst_hidden_behind_a_busy_handler_still_meets_the_bound():
    """The same 4 s wait, but the client sent 20 frames at once: at most burst + rate
    x time (3 + 2 x 4 = 11) pass: 8 charged over the wait, 2 left of the burst; the
    11th is refused 1008."""
    core = make()
    passed = 0
    while core.state is ConnectionState.OPEN and passed < 20:
        if core.receive_frame(text("m"), core.queued_arrival(since=0.0, now=4.0)):
            passed += 1
    assert passed == 10
    assert closes(core) == [1008]


def test_queued_arrival_is_now_without_a_rate_limit_and_never_before_since():
    assert make(settings=replace(SETTINGS, rate_limit=None)).queued_arrival(1.0, 9.0) == 9.0
    core = make()
    core.receive_frame(text("m"), 0.0)
    assert core.queued_arrival(since=3.0, now=9.0) == 3.0  # the wait began at 3.0


def test_pongs_are_free_but_pings_spend_a_token():
    core = make()
    for _ in range(50):
        assert not core.receive_frame(text(PONG_TEXT), 0.0)  # swallowed, never rate-limited
    assert core.state is ConnectionState.OPEN
    for _ in range(3):
        core.receive_frame(text(PING_TEXT), 0.0)
    assert core.take_actions() == [SendFrame(PONG_TEXT_MESSAGE)] * 3
    assert not core.receive_frame(text(PING_TEXT), 0.0)
    assert closes(core) == [1008]


def test_ping_answered_in_its_own_form():
    core = make(settings=replace(SETTINGS, rate_limit=None))
    core.receive_frame(binary(PING_BYTES), 1.0)
    assert core.take_actions() == [SendFrame(PONG_BYTES_MESSAGE)]


def test_heartbeat_pings_on_schedule_and_closes_silent_clients():
    core = make()
    core.tick(9.9)
    assert not core.has_actions
    core.tick(10.0)
    assert core.take_actions() == [SendFrame(PING_TEXT_MESSAGE)]
    core.tick(15.0)
    assert not core.has_actions
    core.receive_frame(text(PONG_TEXT), 19.0)  # any frame is liveness
    core.tick(43.9)  # 24.9 s after the pong: a ping (one per tick at most), no close
    assert core.take_actions() == [SendFrame(PING_TEXT_MESSAGE)]
    core.tick(44.0)
    assert closes(core) == [4000]
    core.tick(100.0)  # closed: timers stop
    assert not core.has_actions


def test_a_plain_client_on_a_server_that_reports_pongs_gets_no_frames():
    """Liveness.TRANSPORT: nothing a page could see is sent; the transport's protocol
    pongs keep the client alive; silence still closes with 4000."""
    core = make()
    core.liveness = Liveness.TRANSPORT
    for second in range(1, 24):  # idle_timeout is 25 s, heartbeat_interval 10 s
        core.tick(float(second))
    assert not core.has_actions  # no ct.ping, ever
    core.note_activity(20.0)  # the browser answered the server's protocol ping
    core.tick(44.9)
    assert not core.has_actions
    core.note_activity(10.0)  # an older report changes nothing
    core.tick(45.0)
    assert closes(core) == [4000]


def test_a_plain_client_behind_a_server_that_keeps_pongs_is_never_closed_for_silence():
    core = make()
    core.liveness = Liveness.SERVER
    for second in range(1, 1000, 7):
        core.tick(float(second))
    assert not core.has_actions
    assert core.state is ConnectionState.OPEN


def test_heartbeat_frames_from_a_plain_client_are_its_data():
    core = make(settings=replace(SETTINGS, rate_limit=None))
    core.liveness = Liveness.TRANSPORT
    assert core.receive_frame(text(PING_TEXT), 1.0)  # delivered, not answered
    assert core.receive_frame(text(PONG_TEXT), 2.0)
    assert not core.has_actions


def test_binary_consumers_ping_in_binary():
    class Binary(Consumer):
        heartbeat_binary = True

    core = make(consumer=Binary)
    core.tick(10.0)
    assert core.take_actions()[0].message["bytes"] == PING_BYTES


def test_lifetime_with_jitter_is_within_bounds():
    settings = replace(SETTINGS, max_lifetime=100.0, lifetime_jitter=0.2)
    policy = LifetimePolicy(100.0, 0.2, random.Random(7))
    expiries = []
    for _ in range(200):
        core = ConnectionCore(settings, PolicyChain([policy]), 0.0)
        core.accept(0.0)
        expiries.append(core.expires_at)
    assert 80.0 <= min(expiries) < 85.0 and 95.0 < max(expiries) <= 100.0
    core.tick(core.expires_at - 0.01)
    assert not core.has_actions
    core.tick(core.expires_at)
    assert closes(core) == [1001]


def test_connection_limits_admission():
    chain = PolicyChain([ConnectionLimitPolicy(per_process=10, per_class=2)])
    core = ConnectionCore(SETTINGS, chain, 0.0)
    assert core.admit(AdmissionContext(process_connections=9, class_connections=1)) is None
    assert core.admit(AdmissionContext(9, 2)) == (1013, "consumer connection limit")
    assert core.admit(AdmissionContext(10, 0)) == (1013, "process connection limit")


def test_send_writes_while_writable_and_queues_behind_a_backlog():
    core = make()
    assert core.send(data(1), writable=True) is Outcome.WRITE
    assert core.queue is None  # idle connections carry no queue
    assert core.send(data(2), writable=False) is Outcome.QUEUED
    # Writable again, but a backlog exists: order is kept.
    assert core.send(data(3), writable=True) is Outcome.QUEUED
    assert [core.queue.get()["text"] for _ in range(2)] == ["2", "3"]


def test_disconnect_policy_overflow_drops_backlog_and_closes_4001_urgently():
    core = make()
    for n in range(3):
        core.send(data(n))
    assert core.send(data(3)) is Outcome.DROPPED
    assert core.last_drop == (4, "slow_consumer")
    assert core.take_actions() == [WriteClose(4001, "slow consumer", True)]
    assert core.send(data(4)) is Outcome.DROPPED
    assert core.last_drop == (1, "closed")


@pytest.mark.parametrize(
    ("policy", "kept", "drop"),
    [
        ("drop_oldest", ["1", "2", "3"], (1, "drop_oldest")),
        ("drop_newest", ["0", "1", "2"], (1, "drop_newest")),
    ],
)
def test_drop_policies(policy, kept, drop):
    core = make(settings=replace(SETTINGS, overflow_policy=policy))
    for n in range(3):
        core.send(data(n))
    outcome = core.send(data(3))
    assert outcome is (Outcome.DROPPED if policy == "drop_newest" else Outcome.QUEUED)
    assert core.last_drop == drop
    assert [core.queue.get()["text"] for _ in range(3)] == kept
    assert core.state is ConnectionState.OPEN


def test_coalesce_replaces_by_key():
    core = make(settings=replace(SETTINGS, overflow_policy="coalesce"))
    core.send(data(1), key="px")
    core.send(data(2), key="px")
    assert core.last_drop == (1, "coalesced")
    assert len(core.queue) == 1 and core.queue.get()["text"] == "2"


def test_control_frames_keep_their_place_and_are_never_dropped():
    core = make()
    core.send(data(1))
    core.send(data(2))
    core.send(data(3))
    assert core.send_control({"type": "websocket.close", "code": 1000}, writable=True) is (
        Outcome.QUEUED
    )
    assert len(core.queue) == 4  # over the bound: control frames are forced in
    assert core.drop_backlog("closed") == 3
    assert core.last_drop == (3, "closed")


def test_extra_policies_run_after_the_builtins():
    class Profanity(HeartbeatPolicy.__mro__[1]):  # a Policy subclass defined by a project
        name = "profanity"

        def on_frame(self, core, message, kind, now):
            if message.get("text") == "darn":
                core.close(1008, "language")
                return False
            return True

    chain = PolicyChain.build(
        ordered_policy_classes([Profanity, HeartbeatPolicy]), SETTINGS, Consumer
    )
    assert chain.names() == ["heartbeat", "profanity"]
    core = ConnectionCore(SETTINGS, chain, 0.0)
    core.accept(0.0)
    assert not core.receive_frame(text(PONG_TEXT), 1.0)  # the heartbeat stops it first
    assert not core.receive_frame(text("darn"), 1.0)
    assert closes(core) == [1008]


def test_core_imports_no_asyncio_django_channels_or_twisted():
    code = (
        "import sys, channels_tuning.core; "
        "bad = [m for m in ('asyncio', 'django', 'channels', 'twisted', 'daphne')"
        " if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_per_user_connection_limit():
    chain = PolicyChain([ConnectionLimitPolicy(per_process=None, per_class=None, per_owner=2)])
    core = ConnectionCore(SETTINGS, chain, 0.0)
    assert core.admit(AdmissionContext(100, 100, owner_connections=1)) is None
    assert core.admit(AdmissionContext(0, 0, owner_connections=2)) == (
        1013,
        "user connection limit",
    )


def test_one_token_bucket_for_rates_and_ping_budgets():
    from channels_tuning.core.tokens import TokenBucket

    bucket = TokenBucket(rate=2.0, burst=2.0)
    tokens, at = 2.0, 10.0
    results = []
    for now in (10.0, 10.0, 10.0, 10.5, 11.5, 100.0):
        allowed, tokens = bucket.take(tokens, at, now)
        at = now
        results.append((allowed, tokens))
    assert results == [
        (True, 1.0),
        (True, 0.0),
        (False, 0.0),
        (True, 0.0),  # half a second at 2/s: one token, spent
        (True, 1.0),  # a second: two
        (True, 1.0),  # capped at the burst
    ]
