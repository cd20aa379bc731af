from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from example_project.chat import views

urlpatterns = [
    path("", views.index, name="index"),
    # GET /metrics: Prometheus exposition, channels-tuning's metrics included.
    path("", include("django_prometheus.urls")),
]

# The browser client (/static/channels_tuning/client.js) under daphne, in DEBUG.
urlpatterns += staticfiles_urlpatterns()
