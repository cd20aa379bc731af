from django.conf import settings
from django.contrib.auth.views import LogoutView
from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path

from channels_tuning.views import metrics
from example_project.chat import views

urlpatterns = [
    path("", views.index, name="index"),
    path("dashboard/", views.dashboard, name="dashboard"),
    # The package's staff-only live view of the server processes (needs a database for
    # staff users: DJANGO_DB_PATH; without one, everyone is anonymous and redirected).
    path("ws-stats/", include("channels_tuning.urls")),
    # Prometheus exposition for loopback and staff only (METRICS_ALLOWED_ADDRESSES):
    # counters name consumers and show traffic.
    path("metrics", metrics, name="prometheus-django-metrics"),
    # The browser client (/static/channels_tuning/client.js) under daphne, DEBUG or
    # not: a demo convenience (a real site serves static files from its web server).
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
]

if settings.DATABASES:  # sessions and users (DJANGO_DB_PATH)
    # POST: the session ends, and with DISCONNECT_ON_LOGOUT the user's WebSockets on
    # every server close with 4003.
    urlpatterns.append(path("accounts/logout/", LogoutView.as_view(next_page="/"), name="logout"))
