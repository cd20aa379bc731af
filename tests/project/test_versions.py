"""The declared dependency ranges install: a fresh virtual environment with protobuf
pinned to the oldest supported major resolves, and the committed envelope code
loads on that runtime without a warning and round-trips a message."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ROUND_TRIP = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("error")  # a gencode/runtime mismatch warns: fail on it
    import google.protobuf
    from channels_tuning.wire.proto.envelope_pb2 import Envelope
    sent = Envelope(kind=Envelope.DATA, seq=2**64 - 1, topic="room", payload=b"\\x00x")
    received = Envelope.FromString(sent.SerializeToString())
    assert received == sent, received
    print(google.protobuf.__version__)
    """
)


@pytest.mark.slow
def test_installs_with_the_oldest_protobuf_and_round_trips(tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv is in the dev extra (tox-uv)"
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), str(REPO), "protobuf>=4.25,<5"],
        check=True,
        timeout=600,
    )
    result = subprocess.run(
        [str(python), "-c", ROUND_TRIP],
        cwd=tmp_path,  # not the repository: the installed package is what runs
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("4.25."), result.stdout
