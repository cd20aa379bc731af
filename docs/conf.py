"""Sphinx configuration of the channels-tuning documentation.

    python -m sphinx -W -b html docs docs/_build/html

The pages in this folder are the documentation's source; the README is a short
introduction that links here (its two tables are kept equal to the pages' by
``tests/project/test_readme.py``). The reference pages are written from the code by
``_ext/ct_reference.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

# The reference reads settings, checks and the management command: Django must be set
# up (the example project's settings; a fixed key keeps its start-up quiet).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "sphinx-build")
import django  # noqa: E402

django.setup()

import channels_tuning  # noqa: E402

project = "channels-tuning"
author = "the channels-tuning authors"
copyright = "2026, the channels-tuning authors"
release = channels_tuning.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "ct_reference",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
# The changelog page includes CHANGELOG.md, whose headings start at level 2.
suppress_warnings = ["myst.header", "misc.highlighting_failure"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["tables.css"]
html_title = f"channels-tuning {release}"
