"""The tutorial's room view (``chat/<room_name>/``), and the example's ``/metrics``."""

from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.template import Context, Engine
from django.urls import path

from channels_tuning.views import metrics

ROOM = Engine(builtins=["django.template.defaultfilters"]).from_string(
    (Path(__file__).parent / "published" / "room.html").read_text()
)


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    return HttpResponse(ROOM.render(Context({"room_name": room_name})))


urlpatterns = [
    path("chat/<str:room_name>/", room),
    path("metrics", metrics),
]
