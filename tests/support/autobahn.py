"""The Autobahn|Testsuite against ``channels-tuning-daphne``, from one command.

    python -m tests.support.autobahn [--cases 1.* 2.* ...] [--outdir DIR]

The suite (``wstest``, autobahntestsuite) runs only under Python 2.7: this finds a
Python 2.7 (``AUTOBAHN_PYTHON``, else pyenv's, else ``python2.7`` on the PATH),
makes a virtualenv for it once (``AUTOBAHN_VENV``, by default
``~/.cache/channels-tuning/autobahn27``: virtualenv 20.21, the last that makes
Python 2 environments, installed into the venv's own ``tools`` folder, then
autobahntestsuite from PyPI), starts a tuned server on a free port with the echo
consumer, permessage-deflate on and the limits a conformance run needs (16 MiB
messages for cases 9.*), runs the fuzzing client against it and reads its report.

Exit status 0 when no case FAILED and the server's log has no ERROR line and no
traceback; the report's ``index.html`` is in ``--outdir``. Prints one line per
behaviour (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED) with its count.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.processes import start_daphne, stop_process

#: The issue's cases: framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
#: closing, limits and performance, and compression.
DEFAULT_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "12.*", "13.*"]
MESSAGE_LIMIT = 16 * 1024 * 1024 + 1024


class AutobahnUnavailable(RuntimeError):
    """No Python 2.7 here, or the suite could not be installed."""


def python27() -> str:
    candidates = [os.environ.get("AUTOBAHN_PYTHON", "")]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(str(p) for p in Path(pyenv_root).glob("versions/2.7.*/bin/python"))
    candidates.append(shutil.which("python2.7") or "")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (2, 7))"],
                capture_output=True,
                text=True,
            )
            if probe.stdout.strip() == "True":
                return candidate
    raise AutobahnUnavailable("no Python 2.7 (set AUTOBAHN_PYTHON, or pyenv install 2.7.18)")


def wstest() -> Path:
    """The suite's ``wstest``, installed on first use."""
    venv = Path(
        os.environ.get("AUTOBAHN_VENV") or Path.home() / ".cache" / "channels-tuning" / "autobahn27"
    )
    command = venv / "bin" / "wstest"
    if command.exists():
        return command
    python = python27()
    tools = venv / "tools"

    def run(*args: str, **env: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env})
        if done.returncode:
            raise AutobahnUnavailable(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")

    run(python, "-m", "pip", "install", "-q", "--target", str(tools), "virtualenv<20.22")
    run(python, "-m", "virtualenv", "-q", str(venv), PYTHONPATH=str(tools))
    run(str(venv / "bin" / "pip"), "install", "-q", "autobahntestsuite")
    if not command.exists():
        raise AutobahnUnavailable(f"autobahntestsuite installed no {command}")
    return command


def run_suite(cases: list[str], outdir: Path) -> dict:
    """Start a tuned server, run the cases against it; the report's counts."""
    import inspect

    from daphne.server import Server

    command = wstest()
    outdir.mkdir(parents=True, exist_ok=True)
    # daphne 4.1 added its own message and frame limits; before it there are none.
    limits: tuple[str, ...] = ()
    if "websocket_max_frame_size" in inspect.signature(Server.__init__).parameters:
        # 1 MiB by default: autobahn drops a larger frame without a close frame,
        # which 9.1.4-9.2.6 send.
        limits = (
            "--websocket-max-message-size", str(MESSAGE_LIMIT),
            "--websocket-max-frame-size", str(MESSAGE_LIMIT),
        )  # fmt: skip
    server = start_daphne(
        outdir,
        tuned=True,
        tuning={
            "HEARTBEAT_INTERVAL": None,
            "IDLE_TIMEOUT": None,
            "RATE_LIMIT": None,
            "MAX_MESSAGE_SIZE": MESSAGE_LIMIT,
            "SEND_QUEUE_MAX_BYTES": 4 * MESSAGE_LIMIT,
        },
        extra_args=(*limits, "--ws-compression"),
    )  # fmt: skip
    try:
        spec = {
            "outdir": str(outdir / "report"),
            "servers": [
                {"agent": "channels-tuning-daphne", "url": f"ws://127.0.0.1:{server.port}/ws/echo/"}
            ],
            "cases": cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        spec_path = outdir / "fuzzingclient.json"
        spec_path.write_text(json.dumps(spec))
        done = subprocess.run(
            [str(command), "-m", "fuzzingclient", "-s", str(spec_path)],
            cwd=outdir,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"wstest failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    finally:
        stop_process(server.proc)
    index = json.loads((outdir / "report" / "index.json").read_text())
    results = index["channels-tuning-daphne"]
    behaviours = collections.Counter(result["behavior"] for result in results.values())
    closes = collections.Counter(result["behaviorClose"] for result in results.values())
    failed = sorted(case for case, result in results.items() if result["behavior"] == "FAILED")
    log = server.log.read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    return {
        "cases": len(results),
        "behaviour": dict(behaviours),
        "close_behaviour": dict(closes),
        "failed": failed,
        "log_errors": errors[:20],
        "report": str(outdir / "report" / "index.html"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    parser.add_argument("--outdir", type=Path, default=None)
    options = parser.parse_args()
    outdir = options.outdir or Path(tempfile.mkdtemp(prefix="autobahn-"))
    try:
        summary = run_suite(options.cases, outdir)
    except AutobahnUnavailable as error:
        print(f"autobahn: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0 if not summary["failed"] and not summary["log_errors"] else 1


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.exit(main())
