"""pytest set-up for the example project's own tests (``example_project/chat/test_consumers.py``):
what a project using channels-tuning writes in its ``conftest.py``. With pytest-django,
its ``DJANGO_SETTINGS_MODULE`` option replaces the first two lines.

Run them with ``python -m pytest example_project`` (without Redis: the in-memory layer).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django.setup()

pytest_plugins = ["channels_tuning.testing.plugin"]
