from django.apps import AppConfig


class ChannelsTuningConfig(AppConfig):
    name = "channels_tuning"
    verbose_name = "Channels tuning"

    def ready(self) -> None:
        from django.core.checks import Tags, register

        from . import (
            checks,  # noqa: F401  (registers the system checks)
            jobs,
        )
        from .conf import project_settings
        from .layers.redis import serializers  # noqa: F401  (registers the channels-redis serializer)
        from .runtime.counters import GROUP_LABELS
        from .servers.guarantees import check_servers

        register(check_servers, Tags.compatibility, deploy=True)
        from django.contrib.auth.signals import user_logged_out

        from .users import disconnect_on_logout

        # Checks DISCONNECT_ON_LOGOUT at each logout (override_settings works).
        user_logged_out.connect(disconnect_on_logout, dispatch_uid="channels_tuning.logout")
        self._watch_passwords()
        jobs.install()  # the scheduler's periodic jobs, run from its first connection
        tuning = project_settings()
        GROUP_LABELS.configure(bool(tuning["PROMETHEUS_GROUP_LABELS"]), tuning["GROUP_LABEL_LIMIT"])
        # Plain daphne's shutdown must wait for every cancelled application (it is
        # already imported when daphne's CLI or runserver loads the project).
        from .compat import daphne

        daphne.install_shutdown_fix()
        if tuning["PROMETHEUS"]:
            from .observability import prometheus

            collector = prometheus.register(group_labels=bool(tuning["PROMETHEUS_GROUP_LABELS"]))
            from .observability import multiprocess

            if multiprocess.enabled():
                multiprocess.install(collector)

    @staticmethod
    def _watch_passwords() -> None:
        """DISCONNECT_ON_PASSWORD_CHANGE's receivers, on the user model's saves (only
        where django.contrib.auth is installed; each checks the setting per save)."""
        from django.apps import apps
        from django.conf import settings
        from django.db.models.signals import post_save, pre_save

        from .users import disconnect_on_password_change, remember_password

        if not apps.is_installed("django.contrib.auth"):
            return
        model = settings.AUTH_USER_MODEL
        pre_save.connect(remember_password, sender=model, dispatch_uid="channels_tuning.pw")
        post_save.connect(
            disconnect_on_password_change, sender=model, dispatch_uid="channels_tuning.pw"
        )
