from django.conf import settings
from django.contrib.staticfiles.views import serve
from django.http import HttpResponseForbidden
from django.urls import include, path, re_path
from django_prometheus import exports

from example_project.chat import views


def metrics(request):
    """Prometheus exposition (channels-tuning's metrics included), for the addresses in
    METRICS_ALLOWED_ADDRESSES only: counters name consumers and show traffic."""
    if request.META.get("REMOTE_ADDR") not in settings.METRICS_ALLOWED_ADDRESSES:
        return HttpResponseForbidden("metrics are not public\n")
    return exports.ExportToDjangoView(request)


urlpatterns = [
    path("", views.index, name="index"),
    # The package's staff-only live view of the server processes (needs a database for
    # staff users: DJANGO_DB_PATH; without one, everyone is anonymous and redirected).
    path("ws-stats/", include("channels_tuning.urls")),
    path("metrics", metrics, name="prometheus-django-metrics"),
    # The browser client (/static/channels_tuning/client.js) under daphne, DEBUG or
    # not: a demo convenience (a real site serves static files from its web server).
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
]
