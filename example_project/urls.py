from django.urls import path

from example_project.chat import views

urlpatterns = [
    path("", views.index, name="index"),
]
