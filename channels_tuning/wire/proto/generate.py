"""Regenerate ``envelope_pb2.py`` and ``envelope_pb2.pyi`` from ``envelope.proto``.

    python -m channels_tuning.wire.proto.generate            # here
    python -m channels_tuning.wire.proto.generate OUTDIR     # elsewhere (the staleness test)

Needs grpcio-tools (``pip install channels-tuning[dev]``), which bundles protoc.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out_dir: Path = HERE) -> None:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    status = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(HERE / "envelope.proto"),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
