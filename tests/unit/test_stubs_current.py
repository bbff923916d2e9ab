"""The committed generated stubs equal a fresh regeneration (CI fails when stale)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_stubs_changes_nothing(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gen_proto.sh", tmp_path / "scripts" / "gen_proto.sh")
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "gen_proto.sh")],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr  # e.g. not the pinned grpcio-tools
    generated = sorted(p.name for p in (tmp_path / "proto" / "assay" / "v1").glob("*_pb2*"))
    committed = sorted(p.name for p in (ROOT / "proto" / "assay" / "v1").glob("*_pb2*"))
    assert generated == committed and len(committed) == 32
    for name in committed:
        fresh = (tmp_path / "proto" / "assay" / "v1" / name).read_text()
        assert fresh == (ROOT / "proto" / "assay" / "v1" / name).read_text(), (
            f"{name} is stale: run make proto"
        )
