"""One user's connections, on every server: :func:`send_to_user`, :func:`disconnect_user`,
:func:`unsubscribe_user`.

Every tuned consumer whose ``scope["user"]`` is authenticated (Channels'
``AuthMiddlewareStack``, or any middleware that sets it) joins its user's group,
:func:`user_group` (``USER_GROUPS``, on by default; a consumer class turns it off
with ``user_groups = False``), and leaves it when the connection ends, like any
group of ``groups``. So from any process (a view after logout, an admin action, a
Celery task) one call reaches every tab and device of a user on every server,
through the channel layer, with the delivery report of
:func:`~channels_tuning.broadcast.broadcast`:

    from channels_tuning.users import disconnect_user, send_to_user

    await send_to_user(user.pk, {"notice": "your export is ready"})
    report = await disconnect_user(user.pk)   # report.delivered: connections closed

:func:`disconnect_user` closes with 4003 (``CloseCode.USER_DISCONNECTED``: the
package's clients do not reconnect) unless told otherwise; the close is handled as
the event arrives, ahead of the events waiting for the consumer's handlers. With
``DISCONNECT_ON_LOGOUT`` Django's ``user_logged_out`` calls it for the user who logs
out, and with ``DISCONNECT_ON_PASSWORD_CHANGE`` a save of a user whose password hash
changed does (:mod:`channels_tuning.apps` connects the receivers).

What is guaranteed: what the layer guarantees for a group send (the tuned Redis
layer: every process with a member is written to, or the report says which were
over capacity or gone). The user group is one more membership per authenticated
connection: one Redis command at connect and at disconnect, none per message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Any, Final

from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER

from .broadcast import broadcast, send_to_group
from .conf import project_settings
from .layers.frames import DISCONNECT_TYPE, UNSUBSCRIBE_TYPE
from .layers.report import DeliveryReport
from .runtime.counters import LAYER_ERRORS
from .runtime.ratelog import RateLimitedLog
from .wire.closecodes import MAX_REASON_BYTES, CloseCode, application_may_send
from .wire.topics import MAX_REASON_LENGTH

__all__ = [
    "USER_GROUP_PREFIX",
    "disconnect_user",
    "send_to_user",
    "unsubscribe_user",
    "user_group",
]

logger = logging.getLogger("channels_tuning")
_logout_log = RateLimitedLog(logger, interval=60.0, level=logging.WARNING)

#: Every user group's name begins with this.
USER_GROUP_PREFIX: Final = "ct.user."
#: A user id that Channels accepts in a group name as it is (ASCII letters, digits,
#: hyphens, underscores, periods; group names end before 100 characters).
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def user_group(user_id: Any) -> str:
    """The group of every connection of ``user_id`` (a user's ``pk``; a UUID or an
    integer as it is, anything else as a digest)."""
    text = str(user_id)
    if _PLAIN_ID.fullmatch(text):
        return USER_GROUP_PREFIX + text
    digest = hashlib.sha256(text.encode()).hexdigest()[:40]
    return f"{USER_GROUP_PREFIX}sha.{digest}"


async def send_to_user(
    user_id: Any,
    payload: Any,
    *,
    on_full: str = "wait",
    timeout: float = 5.0,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    layer: Any = None,
) -> DeliveryReport:
    """:func:`~channels_tuning.broadcast.broadcast` ``payload`` to every connection
    of ``user_id``; ``report.delivered`` says how many got it."""
    return await broadcast(
        user_group(user_id),
        payload,
        on_full=on_full,
        timeout=timeout,
        layer_alias=layer_alias,
        layer=layer,
    )


async def disconnect_user(
    user_id: Any,
    *,
    code: int = CloseCode.USER_DISCONNECTED,
    reason: str = "disconnected by the server",
    on_full: str = "wait",
    timeout: float = 5.0,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    layer: Any = None,
) -> DeliveryReport:
    """Close every connection of ``user_id`` on every server with ``code`` (1000, or
    3000-4999) and ``reason``; ``report.delivered`` says how many were told."""
    code = int(code)
    if not application_may_send(code):
        raise ValueError(f"close code {code}: an application may send 1000 or 3000-4999")
    if len(reason.encode()) > MAX_REASON_BYTES:
        raise ValueError(f"close reason longer than {MAX_REASON_BYTES} bytes")
    message = {"type": DISCONNECT_TYPE, "code": code, "reason": reason}
    return await _to_user(user_id, message, on_full, timeout, layer_alias, layer)


async def unsubscribe_user(
    user_id: Any,
    topic: str,
    *,
    reason: str = "revoked",
    on_full: str = "wait",
    timeout: float = 5.0,
    layer_alias: str = DEFAULT_CHANNEL_LAYER,
    layer: Any = None,
) -> DeliveryReport:
    """End every subscription of ``user_id`` to ``topic`` on every server (the
    clients are told ``unsubscribed`` with ``reason``; :mod:`.consumers.topics`);
    ``report.delivered`` counts the user's connections told, subscribed or not."""
    if len(reason) > MAX_REASON_LENGTH:
        raise ValueError(f"unsubscribe reason longer than {MAX_REASON_LENGTH} characters")
    message = {"type": UNSUBSCRIBE_TYPE, "topic": topic, "reason": reason}
    return await _to_user(user_id, message, on_full, timeout, layer_alias, layer)


async def _to_user(
    user_id: Any, message: dict[str, Any], on_full: str, timeout: float, alias: str, layer: Any
) -> DeliveryReport:
    """A layer event of the package to every connection of ``user_id``."""
    return await send_to_group(
        user_group(user_id),
        message,
        on_full=on_full,
        timeout=timeout,
        layer_alias=alias,
        layer=layer,
    )


#: disconnect_user() calls started by logouts inside an event loop (kept until done).
_pending: set[asyncio.Task[Any]] = set()


def disconnect_on_logout(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """Receiver of Django's ``user_logged_out`` (with ``DISCONNECT_ON_LOGOUT``)."""
    if user is None or not project_settings()["DISCONNECT_ON_LOGOUT"]:
        return
    _disconnect_now_or_soon(user.pk, "logged out")


#: The password a user had before a save, kept on the instance between the signals.
_OLD_PASSWORD = "_channels_tuning_old_password"


def remember_password(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """``pre_save`` of the user model (with ``DISCONNECT_ON_PASSWORD_CHANGE``): the
    stored password hash, one query per save of an existing user."""
    if raw or instance.pk is None or not project_settings()["DISCONNECT_ON_PASSWORD_CHANGE"]:
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True)
    instance.__dict__[_OLD_PASSWORD] = stored.first()


def disconnect_on_password_change(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` of the user model: a changed password hash disconnects the user's
    connections on every server (those opened with the old password's session, and
    any other: the user signs in again)."""
    old = instance.__dict__.pop(_OLD_PASSWORD, None)
    if old is not None and old != instance.password:
        _disconnect_now_or_soon(instance.pk, "password changed")


def _disconnect_now_or_soon(user_id: Any, reason: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a sync view (its own thread): wait for the report
        try:
            async_to_sync(disconnect_user)(user_id, reason=reason)
        except Exception as error:  # the layer is down: the logout itself goes on
            _logout_failed(error)
        return
    task = loop.create_task(disconnect_user(user_id, reason=reason))
    _pending.add(task)
    task.add_done_callback(_logout_done)


def _logout_done(task: asyncio.Task[Any]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        _logout_failed(task.exception())


def _logout_failed(error: BaseException | None) -> None:
    LAYER_ERRORS.inc((f"disconnect_user:{type(error).__name__}",))
    _logout_log.log(
        "channels_tuning: disconnect_user at logout or password change failed: %r", error
    )
