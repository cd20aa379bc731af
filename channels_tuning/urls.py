"""The staff-only live view (:mod:`channels_tuning.views`): include it to turn it on::

path("ws-stats/", include("channels_tuning.urls")),
"""

from django.urls import path

from . import views

app_name = "channels_tuning"
urlpatterns = [
    path("", views.live, name="live"),
    path("snapshots.json", views.live_snapshots, name="live-snapshots"),
]
