"""The testing guide's complete example, ``example_project/chat/test_consumers.py``, passes
when run the way a project runs its own tests: its own ``conftest.py`` and settings,
the package's pytest plugin, no Redis (the in-memory layer)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import REPO

EXAMPLE = "example_project/chat/test_consumers.py"


def test_the_example_projects_tests_pass_as_a_project_runs_them():
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "example_project"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "5 passed" in result.stdout, result.stdout[-1000:]


def test_the_testing_guide_shows_that_file_whole():
    guide = (REPO / "docs" / "topics" / "testing.md").read_text()
    assert f"```{{literalinclude}} ../../{EXAMPLE}" in guide
