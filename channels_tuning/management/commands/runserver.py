"""``manage.py runserver`` on the flow-controlled daphne server.

Takes effect when ``channels_tuning`` is listed before ``daphne`` in
``INSTALLED_APPS`` (system check ``channels_tuning.W005`` says so otherwise).
"""

from daphne.management.commands.runserver import Command as DaphneRunserverCommand

from channels_tuning.servers.daphne import TunedServer


class Command(DaphneRunserverCommand):
    server_cls = TunedServer
