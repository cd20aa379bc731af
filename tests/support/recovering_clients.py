"""Clients that all ask to recover a group's whole history at once (a separate process,
so that their parsing does not delay the test's own measurements).

    python -m tests.support.recovering_clients URL COUNT TIMEOUT

Each connects with the channels-tuning subprotocol to URL (which carries the
``ct_recover`` request) and reads until it has been told where the group stands and
given every message up to there, or told ``recovered: false``. Prints one JSON line:
a report per client (``recovered``: the first answer, ``cut``: a later ``recovered:
false``, ``data``: data frames, ``in_order``, ``error``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import websockets


async def read(connection: Any, report: dict) -> None:
    top, last = None, None
    async for raw in connection:
        frame = json.loads(raw)
        if frame.get("kind") == "subscribed":
            if report["recovered"] is None:
                report["recovered"], top = frame["recovered"], frame["offset"]
                if not frame["recovered"]:
                    return
            elif not frame["recovered"]:
                report["cut"] = True
                return
        elif frame.get("kind") == "data":
            offset = frame["offset"]
            if last is not None and offset != last + 1:
                report["in_order"] = False
            last = offset
            report["data"] += 1
            if top is not None and offset >= top:
                return


async def recover(url: str, timeout: float) -> dict:
    report: dict = {"recovered": None, "cut": False, "data": 0, "in_order": True, "error": None}
    try:
        async with websockets.connect(
            url, subprotocols=["channels-tuning.v1"], max_size=None, open_timeout=timeout
        ) as connection:
            await asyncio.wait_for(read(connection, report), timeout)
    except Exception as error:  # reported, not raised: the test decides
        report["error"] = repr(error)
    return report


async def main(url: str, count: int, timeout: float) -> None:
    reports = await asyncio.gather(*(recover(url, timeout) for _ in range(count)))
    print(json.dumps(reports), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
