"""``channels-tuning-daphne``: daphne's command line with :class:`TunedServer` and its
options (each a field of :class:`TunedOptions`).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from daphne.cli import CommandLineInterface

from .compression import Compression
from .health import DEFAULT_HEALTH_PATH
from .protocol import ProtocolLimits
from .server import (
    DEFAULT_MAX_PENDING_UPGRADES,
    DEFAULT_SEND_BUFFER,
    TunedOptions,
    TunedServer,
)


class TunedCommandLineInterface(CommandLineInterface):
    """daphne's command line with :class:`TunedServer` and its options."""

    server_class: Any = TunedServer

    def __init__(self) -> None:
        super().__init__()
        group = self.parser.add_argument_group("channels-tuning")
        group.add_argument(
            "--drain-timeout",
            type=float,
            default=TunedOptions.drain_timeout,
            help="seconds disconnect handlers get after the 1012 closes on SIGTERM",
        )
        group.add_argument(
            "--drain-rate",
            type=float,
            default=TunedOptions.drain_rate,
            help="WebSocket closes per second in the drain (4000: 200 every 50 ms): how "
            "fast its clients reconnect to the other servers, or to a --reuse-port successor",
        )
        group.add_argument(
            "--health-path",
            default=DEFAULT_HEALTH_PATH,
            help="path answered 200 while serving, 503 while draining or full, for a load "
            "balancer's health check ('' turns it off)",
        )
        group.add_argument(
            "--drain-health-delay",
            type=float,
            default=0.0,
            help="seconds between SIGTERM (health check 503) and the drain (stop listening, "
            "1012 closes): the balancer's check interval times its fall count",
        )
        group.add_argument(
            "--health-port",
            type=int,
            default=None,
            help="also answer the health check on this port (on -b's address; 404 to "
            "anything else), never paused by the accept gate: a balancer's checks do not "
            "wait behind a reconnect storm",
        )
        group.add_argument(
            "--reuse-port",
            action="store_true",
            help="listen with SO_REUSEPORT: a new process started with it on the same "
            "address serves while this one drains (a restart without refused connections)",
        )
        group.add_argument(
            "--workers",
            type=int,
            default=TunedOptions.workers,
            help="serving processes, forked once the application is loaded so that they "
            "share its memory, each listening with SO_REUSEPORT (IPv4 -b/-p)",
        )
        group.add_argument(
            "--ws-compression",
            action="store_true",
            help="accept permessage-deflate (off by default: it costs memory per connection)",
        )
        defaults = Compression()
        group.add_argument(
            "--ws-compression-threshold",
            type=int,
            default=defaults.threshold,
            help="frames shorter than this many bytes are not compressed",
        )
        group.add_argument(
            "--ws-compression-window-bits",
            type=int,
            default=defaults.window_bits,
            choices=range(9, 16),
        )
        group.add_argument(
            "--ws-compression-mem-level", type=int, default=defaults.mem_level, choices=range(1, 10)
        )
        group.add_argument(
            "--ws-compression-context-takeover",
            action="store_true",
            help="keep the deflate window between messages (better ratio, more memory)",
        )

        defaults_limits = ProtocolLimits()
        group.add_argument(
            "--ws-control-frame-rate",
            type=float,
            default=defaults_limits.control_frame_rate,
            help="pings a client may send per second (beyond the burst: close 1008)",
        )
        group.add_argument(
            "--ws-control-frame-burst",
            type=float,
            default=defaults_limits.control_frame_burst,
            help="pings a client may send at once",
        )
        group.add_argument(
            "--handshake-timeout",
            type=float,
            default=10.0,
            help="seconds a connection has to send a whole first request (0: no limit)",
        )
        group.add_argument(
            "--max-half-open",
            type=int,
            default=None,
            help="connections still in their handshake beyond which new ones are refused",
        )
        group.add_argument(
            "--max-half-open-per-address",
            type=int,
            default=None,
            help="connections still in their handshake from one address (IPv6: its "
            "IPV6_CLIENT_PREFIX) beyond which new ones from it are refused",
        )
        group.add_argument(
            "--max-pending-upgrades",
            type=int,
            default=DEFAULT_MAX_PENDING_UPGRADES,
            help="WebSocket upgrades whose application has not accepted them yet at "
            "which the server stops accepting connections until one is settled (new "
            "ones wait in the listen backlog); an upgrade already accepted gets 503 "
            "(0: no limit)",
        )
        group.add_argument(
            "--no-accept-gate",
            action="store_true",
            help="keep accepting at --max-pending-upgrades and answer the upgrades beyond it "
            "503; not behind nginx, which takes a server out for fail_timeout after one 503 "
            "(see the deployment guide)",
        )
        group.add_argument(
            "--ws-send-buffer",
            type=int,
            default=DEFAULT_SEND_BUFFER,
            help="SO_SNDBUF of each WebSocket's socket in bytes (0: the kernel's autotuning)",
        )
        group.add_argument(
            "--ws-max-fragments",
            type=int,
            default=defaults_limits.max_fragments,
            help="fragments one message may have (beyond: close 1009); off by default: "
            "a message's fragments may cost twice the message-size limit in memory",
        )
        group.add_argument(
            "--no-access-log",
            action="store_true",
            help="no access log lines (daphne writes one per request, connect and disconnect "
            "at its default -v 1; -v 0 would also hide the server's other INFO lines)",
        )

    def run(self, args: list[str]) -> None:
        options, _ = self.parser.parse_known_args(args)
        if options.workers < 1:
            self.parser.error("--workers must be at least 1")
        if options.no_access_log and options.access_log:
            # daphne would still open (create) the file and write nothing to it.
            self.parser.error("--no-access-log and --access-log contradict each other")
        compression = None
        if options.ws_compression:
            compression = Compression(
                threshold=options.ws_compression_threshold,
                window_bits=options.ws_compression_window_bits,
                mem_level=options.ws_compression_mem_level,
                no_context_takeover=not options.ws_compression_context_takeover,
            )
        limits = ProtocolLimits(
            control_frame_rate=options.ws_control_frame_rate,
            control_frame_burst=options.ws_control_frame_burst,
            max_fragments=options.ws_max_fragments,
        )
        server_class = type(self).server_class
        if not (isinstance(server_class, type) and issubclass(server_class, TunedServer)):
            # A subclass chose a server of its own (daphne's CLI tests do): it gets
            # daphne's options only, as daphne's CLI would hand them.
            super().run(args)
            return
        tuned = TunedOptions(
            drain_timeout=options.drain_timeout,
            drain_rate=options.drain_rate,
            compression=compression,
            protocol_limits=limits,
            handshake_timeout=options.handshake_timeout,
            max_half_open=options.max_half_open,
            max_half_open_per_address=options.max_half_open_per_address,
            max_pending_upgrades=options.max_pending_upgrades or None,
            accept_gate=not options.no_accept_gate,
            send_buffer=options.ws_send_buffer,
            health_path=options.health_path,
            drain_health_delay=options.drain_health_delay,
            health_port=options.health_port,
            reuse_port=options.reuse_port,
            workers=options.workers,
            access_log=not options.no_access_log,
        )
        self.server_class = functools.partial(server_class, options=tuned)
        super().run(args)


def main() -> None:
    """Entry point of ``channels-tuning-daphne``."""
    TunedCommandLineInterface().run(sys.argv[1:])
