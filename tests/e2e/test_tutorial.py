"""Channels' own tutorial chat as the acceptance test of drop-in: its consumer, routing
and ``room.html`` as published (tests/tutorial/published), migrated step by step as
docs/tutorial.md says (tests/tutorial/steps.py), each step on a real server with
redis-server, behind ``AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(…)))``
as the tutorial deploys it, in headless Chromium.

After every step: two pages chat; no line that is not a chat message appears on any
page (no ``ct.ping``, no envelope, no ``subscribed`` or presence frame); a third page
that only reads stays connected for 3 x IDLE_TIMEOUT and still receives; on the tuned
server, a page whose browser is frozen (every process of it stopped) is closed with
4000 within the documented bound (IDLE_TIMEOUT, plus the server's ping period)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from channels_tuning.wire.subprotocol import SUBPROTOCOL
from tests.support.processes import REPO, start_daphne, stop_process
from tests.support.waiting import wait_until
from tests.tutorial.steps import STEPS, Step, consumer_source

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REDIS_PY_MAJOR = int(redis.__version__.split(".")[0])
ARTIFACTS = REPO / "test-artifacts"
IDLE_TIMEOUT = 3.0
#: daphne pings a connection silent for --ping-interval, checking every 2 s.
PING_PERIOD = 2.0
TUNING = {"IDLE_TIMEOUT": IDLE_TIMEOUT, "HEARTBEAT_INTERVAL": 1.0, "SCHEDULER_TICK": 0.2}


def test_every_edit_the_steps_make_is_in_the_tutorial():
    """The steps are the tutorial's: each edit's new text is shown in docs/tutorial.md,
    and each step's consumer still compiles."""
    tutorial = (REPO / "docs" / "tutorial.md").read_text()
    for step in STEPS:
        for _, new in step.edits:
            assert new.strip() in tutorial, (step.number, new)
        for pattern in step.tuning.get("HISTORY", {}):
            assert pattern in tutorial
        compile(consumer_source(step), "<step>", "exec")


def is_error(message) -> bool:
    """A console error of the page's own (not the favicon's 404)."""
    return message.type == "error" and not message.text.startswith("Failed to load resource")


def open_connections(server) -> float:
    return sum(
        value
        for (name, _), value in server.metrics().items()
        if name == "channels_tuning_open_connections"
    )


def closes(server, code: int) -> float:
    return sum(
        value
        for (name, labels), value in server.metrics().items()
        if name == "channels_tuning_closes_total" and ("code", str(code)) in labels
    )


async def chat_log(page) -> list[str]:
    return (await page.input_value("#chat-log")).splitlines()


async def say(page, text: str) -> None:
    await page.fill("#chat-message-input", text)
    await page.press("#chat-message-input", "Enter")


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS, ids=lambda step: f"step{step.number}")
async def test_the_published_tutorial_page_keeps_working_after_each_step(
    tmp_path, shared_redis, step: Step
):
    from playwright.async_api import async_playwright

    server = start_daphne(
        tmp_path,
        server=step.server,
        redis=shared_redis,
        application="tests.tutorial.asgi:application",
        tuning=TUNING,
        extra_args=("--ping-interval", "1"),
        CT_TUTORIAL_STEP=str(step.number),
    )
    room = f"step{step.number}x{os.getpid()}"
    url = f"http://127.0.0.1:{server.port}/chat/{room}/"
    frozen: subprocess.Popen | None = None
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                writer_a, writer_b, reader = [await browser.new_page() for _ in range(3)]
                errors: list[str] = []
                for page in (writer_a, writer_b, reader):
                    page.on("console", lambda m: errors.append(m.text) if is_error(m) else 0)
                    await page.goto(url)
                    await page.wait_for_function("chatSocket.readyState === WebSocket.OPEN")
                # The page offered no subprotocol and got none.
                assert await reader.evaluate("chatSocket.protocol") == ""

                await say(writer_a, "hello from A")
                for page in (writer_a, writer_b, reader):
                    await page.wait_for_function(
                        "document.querySelector('#chat-log').value.includes('hello from A')"
                    )
                await say(writer_b, "hello from B")
                expected = ["hello from A", "hello from B"]
                for page in (writer_a, writer_b, reader):
                    await page.wait_for_function(
                        "document.querySelector('#chat-log').value.includes('hello from B')"
                    )
                    assert await chat_log(page) == expected

                # The reader only reads, past three idle timeouts (its browser answers
                # the server's protocol pings: nothing reaches its page).
                await asyncio.sleep(3 * IDLE_TIMEOUT + 0.5)
                if step.number == 0 and REDIS_PY_MAJOR >= 8:
                    # The baseline: as published, on redis-py 8, channels-redis' blocking
                    # read times out after 5 s of quiet and ends every consumer
                    # (channels_redis#422) while daphne keeps the sockets open: the
                    # pages look connected and get nothing more. From step 1 on, the
                    # package retries the read and the chat goes on.
                    await say(writer_a, "after the wait")
                    await asyncio.sleep(3)
                    assert await chat_log(reader) == expected
                    assert "redis.exceptions.TimeoutError" in server.log.read_text()
                    return
                await say(writer_a, "after the wait")
                expected.append("after the wait")
                for page in (writer_a, writer_b, reader):
                    await page.wait_for_function(
                        "document.querySelector('#chat-log').value.includes('after the wait')"
                    )
                    assert await chat_log(page) == expected
                    assert await page.evaluate("chatSocket.readyState") == 1
                assert errors == []  # "Chat socket closed unexpectedly" is console.error

                ARTIFACTS.mkdir(exist_ok=True)
                await reader.screenshot(path=str(ARTIFACTS / f"tutorial-step{step.number}.png"))

                if step.server == "tuned":
                    frozen = await freeze_a_page_and_time_its_close(server, url, tmp_path)
            finally:
                await browser.close()
    finally:
        if frozen is not None:
            os.killpg(frozen.pid, signal.SIGKILL)  # our own session: the frozen browser
            frozen.wait(10)
        stop_process(server.proc)


async def freeze_a_page_and_time_its_close(server, url: str, tmp_path: Path) -> subprocess.Popen:
    """A fourth page in a browser of its own; every process of that browser is
    stopped (SIGSTOP to its session): its WebSocket stack no longer answers pings."""
    before = open_connections(server)
    frozen = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'frozen-profile'}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    await wait_until(lambda: open_connections(server) == before + 1, timeout=30)
    closed_before = closes(server, 4000)
    os.killpg(frozen.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    await wait_until(lambda: closes(server, 4000) == closed_before + 1, timeout=20)
    elapsed = time.monotonic() - stopped_at
    # Silent for IDLE_TIMEOUT after its last pong, which came at most one ping period
    # before the stop; plus the scheduler tick and the metrics poll.
    assert elapsed <= IDLE_TIMEOUT + 1.5, elapsed
    return frozen


@pytest.mark.slow
async def test_the_package_client_offers_the_subprotocol_and_gets_envelopes(tmp_path, shared_redis):
    """On step 4 (history): a client that offered channels-tuning.v1 gets the numbered
    envelope of the same broadcast the published page got plainly."""
    import json

    import websockets

    step = STEPS[4]
    server = start_daphne(
        tmp_path,
        server=step.server,
        redis=shared_redis,
        application="tests.tutorial.asgi:application",
        tuning={"HEARTBEAT_INTERVAL": None},
        CT_TUTORIAL_STEP="4",
    )
    room = f"envelopes{os.getpid()}"
    origin = {"origin": f"http://127.0.0.1:{server.port}"}
    try:
        async with (
            websockets.connect(server.ws(f"/ws/chat/{room}/"), **origin) as plain,
            websockets.connect(
                server.ws(f"/ws/chat/{room}/"), subprotocols=[SUBPROTOCOL], **origin
            ) as tuned,
        ):
            assert tuned.subprotocol == SUBPROTOCOL
            assert plain.subprotocol is None
            await plain.send(json.dumps({"message": "hi"}))
            assert json.loads(await asyncio.wait_for(plain.recv(), 5)) == {"message": "hi"}
            frames = []
            while not frames or frames[-1].get("kind") != "data":
                frames.append(json.loads(await asyncio.wait_for(tuned.recv(), 5)))
            data = frames[-1]
            assert (data["topic"], data["offset"], data["data"]) == (
                f"chat_{room}",
                1,
                {"message": "hi"},
            )
    finally:
        stop_process(server.proc)
