"""ASGI entry point: ``daphne example_project.asgi:application`` (or
``channels-tuning-daphne example_project.asgi:application`` for flow control).

WebSockets go through the checks every Channels site should have in front of its
consumers: the Origin must be one of ALLOWED_HOSTS (cross-site WebSocket hijacking:
a page on another site could open a socket with the user's cookies), the session's
user is resolved (per-user connection limits count by it), and unknown paths get a
403 and one log line rather than a traceback."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter
from channels.security.websocket import AllowedHostsOriginValidator

from channels_tuning import Lifespan, TunedURLRouter
from example_project.chat.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        # For uvicorn and hypercorn: on shutdown, close with 1012 and wait for every
        # connection to leave its groups (daphne has no lifespan; harmless there).
        "lifespan": Lifespan(),
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(TunedURLRouter(websocket_urlpatterns))
        ),
    }
)
