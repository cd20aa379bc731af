from django.urls import include, path

from example_project.chat import views

urlpatterns = [
    path("", views.index, name="index"),
    # GET /metrics: Prometheus exposition, channels-tuning's metrics included.
    path("", include("django_prometheus.urls")),
]
