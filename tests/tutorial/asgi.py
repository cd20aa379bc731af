"""The tutorial chat's ASGI application (Channels' tutorial's ``mysite/asgi.py``: the
consumer behind ``AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...)))``),
with the consumer of the step in ``CT_TUTORIAL_STEP``."""

import os

from django.core.asgi import get_asgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.tutorial.settings"
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from .settings import STEP  # noqa: E402
from .steps import consumer_module  # noqa: E402

consumers = consumer_module(STEP)

websocket_urlpatterns = [
    re_path(r"ws/chat/(?P<room_name>\w+)/$", consumers.ChatConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
