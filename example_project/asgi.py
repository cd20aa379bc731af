"""ASGI entry point: ``daphne example_project.asgi:application`` (or
``channels-tuning-daphne example_project.asgi:application`` for flow control)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter

from example_project.chat.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)}
)
