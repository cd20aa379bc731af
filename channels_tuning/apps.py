from django.apps import AppConfig


class ChannelsTuningConfig(AppConfig):
    name = "channels_tuning"
    verbose_name = "Channels tuning"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
