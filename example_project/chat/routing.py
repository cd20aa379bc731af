from django.urls import re_path

from . import consumers

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room>[\w-]{1,50})/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"^ws/dashboard/$", consumers.DashboardConsumer.as_asgi()),
    re_path(r"^ws/echo/$", consumers.EchoConsumer.as_asgi()),
]
