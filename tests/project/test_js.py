"""The browser client's JavaScript: its Node test suite, and byte-for-byte
compatibility of its envelope codec with Python's protobuf (issues #5 and #7)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

from channels_tuning.wire.proto.envelope_pb2 import Envelope
from tests.support.processes import REPO

NODE = shutil.which("node") or "node"


def test_node_test_suite_passes():
    # Files, not the directory: Node 18 (Debian 12) and Node 22 read a directory
    # argument differently.
    files = sorted(str(path.relative_to(REPO)) for path in REPO.glob("tests/js/*.test.mjs"))
    assert len(files) == 4
    result = subprocess.run(
        [NODE, "--test", *files], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout


def random_envelope(rng: random.Random) -> Envelope:
    text = lambda: "".join(rng.choice("aé✓ z") for _ in range(rng.randrange(6)))  # noqa: E731
    return Envelope(
        kind=rng.randrange(1, len(Envelope.Kind.keys())),
        seq=rng.choice([0, 1, rng.randrange(2**64)]),
        topic=text(),
        payload=rng.randbytes(rng.randrange(5)),
        type_url=text(),
        sent_at_ms=rng.choice([0, -1, rng.randrange(-(2**63), 2**63)]),
        error_code=rng.choice([0, rng.randrange(2**32)]),
        error=text(),
        offset=rng.choice([0, 1, rng.randrange(2**53)]),
        epoch=rng.choice(["", "9f3a61c2"]),
        recovered=rng.random() < 0.5,
        detail=text(),
    )


def test_js_and_python_envelopes_are_byte_identical():
    rng = random.Random(5)
    envelopes = [random_envelope(rng) for _ in range(300)]
    requests = []
    for envelope in envelopes:
        requests.append({"decode": envelope.SerializeToString().hex()})
        requests.append(
            {
                "encode": {
                    "kind": envelope.kind,
                    "seq": str(envelope.seq),
                    "topic": envelope.topic,
                    "payload": envelope.payload.hex(),
                    "typeUrl": envelope.type_url,
                    "sentAtMs": str(envelope.sent_at_ms),
                    "errorCode": envelope.error_code,
                    "error": envelope.error,
                    "offset": str(envelope.offset),
                    "epoch": envelope.epoch,
                    "recovered": envelope.recovered,
                    "detail": envelope.detail,
                }
            }
        )
    result = subprocess.run(
        [NODE, "tests/js/interop.mjs"],
        cwd=REPO,
        input="\n".join(json.dumps(r) for r in requests) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {number: name.lower() for name, number in Envelope.Kind.items()}
    for envelope, decoded, encoded in zip(envelopes, answers[::2], answers[1::2], strict=True):
        assert encoded == envelope.SerializeToString().hex()  # JS encodes what Python does
        assert decoded["kind"] == kinds[envelope.kind]  # JS reads what Python wrote
        assert str(decoded["seq"]) == str(envelope.seq)
        assert str(decoded["sentAtMs"]) == str(envelope.sent_at_ms)
        assert (decoded["topic"], decoded["typeUrl"], decoded["error"]) == (
            envelope.topic,
            envelope.type_url,
            envelope.error,
        )
        assert (str(decoded["offset"]), decoded["epoch"], decoded["recovered"]) == (
            str(envelope.offset),
            envelope.epoch,
            envelope.recovered,
        )
        assert (decoded["payload"], decoded["errorCode"], decoded["detail"]) == (
            envelope.payload.hex(),
            envelope.error_code,
            envelope.detail,
        )
