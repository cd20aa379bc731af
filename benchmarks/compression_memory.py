"""Per-connection memory of permessage-deflate on the tuned server.

For each setting, start channels-tuning-daphne, open N connections that
negotiate permessage-deflate, send one 4 KiB message on each and read its echo
(so both the server's compressor and decompressor exist), and report the
server's RSS growth per connection.

    python benchmarks/compression_memory.py [--connections 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import websockets  # noqa: E402

from tests.support.processes import start_daphne, stop_process  # noqa: E402

CASES = {
    "off": (),
    "default (11 bits, memLevel 4, no context takeover)": ("--ws-compression",),
    "12 bits, memLevel 5, context takeover": (
        "--ws-compression",
        "--ws-compression-window-bits",
        "12",
        "--ws-compression-mem-level",
        "5",
        "--ws-compression-context-takeover",
    ),
    "zlib defaults (15 bits, memLevel 8, context takeover)": (
        "--ws-compression",
        "--ws-compression-window-bits",
        "15",
        "--ws-compression-mem-level",
        "8",
        "--ws-compression-context-takeover",
    ),
}
MESSAGE = "a line of text that deflate can shrink well. " * 90  # ~4 KiB


async def measure(args: tuple[str, ...], count: int, tmp: Path) -> float:
    daphne = start_daphne(tmp, tuned=True, tuning={"HEARTBEAT_INTERVAL": None}, extra_args=args)
    try:
        compression = "deflate" if args else None

        async def open_and_echo() -> websockets.ClientConnection:
            ws = await websockets.connect(
                daphne.ws("/ws/echo/"), compression=compression, ping_interval=None
            )
            await ws.send(MESSAGE)
            assert await ws.recv() == MESSAGE
            return ws

        warm = [await open_and_echo() for _ in range(10)]
        await asyncio.sleep(0.5)
        before = daphne.rss_kb()
        clients = [await open_and_echo() for _ in range(count)]
        await asyncio.sleep(0.5)
        per_connection = (daphne.rss_kb() - before) / count
        for ws in clients + warm:
            await ws.close()
        return per_connection
    finally:
        stop_process(daphne.proc)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        results = {
            case: await measure(args, options.connections, Path(name))
            for case, args in CASES.items()
        }
    print(
        f"tuned server RSS per connection, {options.connections} connections, "
        "one 4 KiB message echoed on each"
    )
    print("| permessage-deflate | KiB per connection |")
    print("|---|---|")
    for case, kib in results.items():
        print(f"| {case} | {kib:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
