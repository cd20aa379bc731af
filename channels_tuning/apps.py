from django.apps import AppConfig


class ChannelsTuningConfig(AppConfig):
    name = "channels_tuning"
    verbose_name = "Channels tuning"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the system checks)
        )
        from .conf import project_settings
        from .layers import serializers  # noqa: F401  (registers the channels-redis serializer)

        tuning = project_settings()
        if tuning["PROMETHEUS"]:
            from .observability import prometheus

            prometheus.register(group_labels=bool(tuning["PROMETHEUS_GROUP_LABELS"]))
