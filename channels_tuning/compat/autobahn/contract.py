"""What :func:`channels_tuning.compat.autobahn.check` compares: the symbols and the
lines of upstream source each autobahn hook relies on, and which hook a change turns
off (:func:`feature_of`). The hooks themselves are in the package's ``__init__``."""

from __future__ import annotations

import inspect
import re

import autobahn.twisted.websocket as autobahn_twisted_module
import autobahn.websocket.protocol as autobahn_protocol_module
import daphne.ws_protocol as daphne_ws_protocol
from autobahn.websocket import xormasker
from autobahn.websocket.compress_deflate import PerMessageDeflate
from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol

from .._checker import Checker

#: The modules whose ``hltype``/``hlval`` ``defer_highlighting`` replaces.
HIGHLIGHTING_MODULES = (autobahn_protocol_module, autobahn_twisted_module)

#: What autobahn keeps of the opening handshake, read by the handshake's methods only
#: (``release_handshake`` lets it go once the connection is open).
HANDSHAKE_ATTRIBUTES = (
    "http_request_data",
    "http_response_data",
    "http_status_line",
    "http_request_uri",
    "_wskey",
    "http_headers",
)
HANDSHAKE_METHODS = ("processHandshake", "succeedHandshake")

#: What an open connection's attributes hold until something happens to it (a close,
#: a failure, a deflate offer, a timing request): ``DefaultsRelease`` moves them to
#: the protocol class, so an idle connection's ``__dict__`` keeps 39 entries, not 70:
#: within the 42 a 64-slot table holds (832 bytes instead of 1 584). Each is read as
#: ``self.name`` and written as ``self.name = ...`` only: never by its name as a
#: string (``hasattr``, ``getattr``) nor deleted, which would tell the class default
#: from the instance's. 14.7 KB per idle connection instead of 15.5 (the server's RSS,
#: ``benchmarks/connections.py --connections 5000 --kinds tuned,websockets``).
RELEASED_DEFAULTS: dict[str, bool | None] = {
    # None once ``release_handshake`` ran (``http_headers`` is an empty mapping then).
    **dict.fromkeys(name for name in HANDSHAKE_ATTRIBUTES if name != "http_headers"),
    **dict.fromkeys(
        (
            "_perMessageCompress",
            "trackedTimings",
            "wasNotCleanReason",
            "localCloseCode",
            "localCloseReason",
            "remoteCloseCode",
            "remoteCloseReason",
            "openHandshakeTimeoutCall",
            "closeHandshakeTimeoutCall",
            "websocket_protocol_in_use",
            # daphne's own keepalive's (the tuned server's prepared pings never set them)
            "autoPingTimeoutCall",
            "autoPingPending",
            "autoPingPendingCall",
            "autoPingPendingSent",
            "protocol_to_accept",  # daphne's (listed in compat/daphne.py), read in the handshake
        )
    ),
    **dict.fromkeys(
        (
            "triggered",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "closedByMe",
            "failedByMe",
            "droppedByMe",
            "wasClean",
            "wasServerConnectionDropTimeout",
            "wasOpenHandshakeTimeout",
            "wasCloseHandshakeTimeout",
            "wasServingFlashSocketPolicyFile",
        ),
        False,
    ),
}

#: ``WebSocketProtocol`` methods, the symbol a change is reported as, and the lines of
#: their source each hook relies on.
SOURCE_CONTRACT = (
    ("_connectionMade", "WebSocketProtocol.send_queue", ["self.send_queue ="]),
    ("_connectionMade", "WebSocketProtocol._perMessageCompress", ["self._perMessageCompress ="]),
    (
        "sendPreparedMessage",
        "WebSocketProtocol.sendPreparedMessage",
        ["self._perMessageCompress is None", "preparedMsg.payloadHybi"],
    ),
    ("onMessageFrameData", "WebSocketProtocol.failedByMe", ["if not self.failedByMe:"]),
    (
        "_fail_connection",
        "WebSocketProtocol._fail_connection localCloseCode",
        ["self.failedByMe = True", "self.sendCloseFrame("],
    ),
    (
        "sendCloseFrame",
        "WebSocketProtocol.sendCloseFrame localCloseCode",
        ["self.localCloseCode = code"],
    ),
    ("_connectionLost", "WebSocketProtocol.is_closed", ["txaio.resolve(self.is_closed, self)"]),
    (
        "processControlFrame",
        "WebSocketProtocol.processControlFrame autoPingPending",
        ["if self.autoPingPending:", "self._onPong(payload)"],
    ),
    (
        "processData",
        "WebSocketProtocol.processData current_frame_masker",
        ["self.current_frame_masker = create_xor_masker(", "if self.current_frame is None:"],
    ),
    (
        "onFrameEnd",
        "WebSocketProtocol.onFrameEnd current_frame_masker",
        ["self.current_frame = None"],
    ),
    (
        "_connectionMade",
        "WebSocketProtocol.CONFIG_ATTRS",
        ["for configAttr in self.CONFIG_ATTRS", "if not hasattr(self, configAttr)"],
    ),
    (
        "_connectionMade",
        "WebSocketProtocol._connectionMade pformat",
        ["attrs=pformat(configAttrLog)"],
    ),
)


def check(checker: Checker) -> None:
    """Record in ``checker`` what no longer matches in the installed autobahn."""
    protocol = WebSocketProtocol
    checker.callables(
        protocol,
        "WebSocketProtocol",
        ("sendCloseFrame", "sendPreparedMessage", "sendMessage", "_connectionMade"),
    )
    checker.attributes(protocol, "WebSocketProtocol", ("STATE_CONNECTING", "STATE_OPEN"))
    for method, symbol, fragments in SOURCE_CONTRACT:
        checker.contains(getattr(protocol, method, None), symbol, fragments)
    checker.callables(protocol, "WebSocketProtocol", ("onAutoPingTimeout",))
    checker.attributes(xormasker, "autobahn.websocket.xormasker", ("XorMaskerNull",))
    checker.attributes(WebSocketServerProtocol, "WebSocketServerProtocol", ("CONFIG_ATTRS",))
    checker.attributes(autobahn_protocol_module, "autobahn.websocket.protocol", ("pformat",))
    _check_attribute_users(checker)
    for attribute in RELEASED_DEFAULTS:
        if attribute in WebSocketServerProtocol.CONFIG_ATTRS:
            checker.changed(f"WebSocketProtocol.{attribute} default", "now a factory option")
        if hasattr(daphne_ws_protocol.WebSocketProtocol, attribute):
            checker.changed(f"WebSocketProtocol.{attribute} default", "now a class attribute")
    for module in HIGHLIGHTING_MODULES:
        checker.attributes(module, module.__name__, ("hltype", "hlval"))
        text = checker.source(module, module.__name__) or ""
        # Each use is an argument of a log call: a lazy value would break text code.
        if " = hltype(" in text or " = hlval(" in text or "+ hlval(" in text:
            checker.changed(f"{module.__name__} hltype", "highlighted text used as text")
    for attribute in ("_compressor", "_decompressor", "client_no_context_takeover"):
        checker.contains(PerMessageDeflate, f"PerMessageDeflate.{attribute}", [f"self.{attribute}"])


#: The classes whose methods may read what :func:`release_handshake` and
#: :func:`shrink_send_queue` change (a daphne connection is all of them).
CONNECTION_CLASSES = (
    WebSocketProtocol,
    WebSocketServerProtocol,
    autobahn_twisted_module.WebSocketServerProtocol,
    daphne_ws_protocol.WebSocketProtocol,
)


def _check_attribute_users(checker: Checker) -> None:
    """The handshake's attributes are read by the handshake's methods only, and
    ``send_queue`` is used through ``len``, ``append`` and ``popleft`` only."""
    for cls in CONNECTION_CLASSES:
        for name, method in vars(cls).items():
            if not inspect.isfunction(method):  # a method reads ``self``: the others do not
                continue
            # Unreadable source turns off the two hooks this reads for, not the fast path.
            text = checker.source(method, f"{cls.__name__}.{name} handshake")
            if text is None:
                checker.changed(f"{cls.__name__}.{name} send_queue queue", "source unavailable")
                checker.changed(f"{cls.__name__}.{name} default", "source unavailable")
                checker.changed(f"{cls.__name__}.{name} counters", "source unavailable")
                continue
            for attribute in RELEASED_DEFAULTS:
                if f"del self.{attribute}" in text or re.search(f"[\"']{attribute}[\"']", text):
                    checker.changed(f"WebSocketProtocol.{attribute} default", f"by name in {name}")
            for attribute in (*HANDSHAKE_ATTRIBUTES, "request.headers"):
                if name not in HANDSHAKE_METHODS and f"self.{attribute}" in text:
                    checker.changed(f"WebSocketProtocol.{attribute} handshake", f"read in {name}")
            stats_uses = re.findall(r"self\.trafficStats( = TrafficStats\(\)|\.\w+ \+=)?", text)
            if "" in stats_uses:
                checker.changed("WebSocketProtocol.trafficStats counters", f"read in {name}")
            uses = set(re.findall(r"self\.send_queue(\.\w+|\W)", text))
            if uses - {".append", ".popleft", ")", " "}:
                checker.changed("WebSocketProtocol.send_queue queue", f"used in {name}")


#: The feature a changed symbol turns off: the first rule whose text the symbol
#: contains; any other change turns off the prepared fast path.
FEATURE_RULES = (
    ("hltype", "lazy_highlight"),
    ("hlval", "lazy_highlight"),
    ("autoPingPending", "prepared_pings"),
    ("onAutoPingTimeout", "prepared_pings"),
    ("is_closed", "release_is_closed"),
    ("current_frame_masker", "release_frame_masker"),
    ("xormasker", "release_frame_masker"),
    ("localCloseCode", "protocol_error_code"),
    ("PerMessageDeflate", "release_deflate"),
    ("failedByMe", "stop_assembling"),
    (" handshake", "release_handshake"),
    ("send_queue queue", "small_send_queue"),
    (" default", "release_defaults"),
    (" counters", "shared_traffic_stats"),
    ("pformat", "lazy_option_log"),
    ("CONFIG_ATTRS", "shared_options"),  # a server or the base class
)


def feature_of(symbol: str) -> str:
    """The feature of ``compat.autobahn`` that a change of ``symbol`` turns off."""
    for text, feature in FEATURE_RULES:
        if text in symbol:
            return feature
    return "prepared_fast_path"
