"""``channels-tuning-daphne``'s own options, refused before anything is started (the
options at work against a running server, ``--no-access-log`` alone among them, are
tests/e2e/test_daphne.py)."""

from __future__ import annotations

import pytest

from channels_tuning.servers.daphne.cli import TunedCommandLineInterface


def test_no_access_log_with_an_access_log_file_is_refused(tmp_path, capsys):
    access_log = tmp_path / "access.log"
    # An application that cannot be imported: without the check the run ends at once.
    args = ["--no-access-log", "--access-log", str(access_log), "no_such_module:application"]
    with pytest.raises(SystemExit) as exit_info:
        TunedCommandLineInterface().run(args)
    assert exit_info.value.code == 2  # argparse's usage error
    assert "--no-access-log and --access-log contradict each other" in capsys.readouterr().err
    assert not access_log.exists()  # refused before daphne opens it
