"""The demo's shipped bases (assets/demo-base, assets/tiny-sd3-base) match their sha256 records, and
`scripts/verify_demo_base.py`, which `make demo` runs first, refuses a changed, missing or unlisted file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERIFY = ROOT / "scripts" / "verify_demo_base.py"
BASES = ("demo-base", "tiny-sd3-base")


def verify(assets: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, VERIFY, *([str(assets)] if assets else [])],
                          capture_output=True, text=True)


def test_the_shipped_bases_match_their_records():
    done = verify()
    assert done.returncode == 0, done.stderr
    for name in BASES:
        record = json.loads((ROOT / "assets" / f"{name}.json").read_text())
        assert f"{name}: {len(record['sha256'])} files match" in done.stdout
        assert record["code_commit"] and record["settings"] and record["seed"] == 0


def test_a_changed_missing_or_unlisted_file_is_refused_by_name(tmp_path):
    for name in BASES:
        shutil.copytree(ROOT / "assets" / name, tmp_path / name)
        shutil.copy(ROOT / "assets" / f"{name}.json", tmp_path / f"{name}.json")
    assert verify(tmp_path).returncode == 0
    weights = next((tmp_path / "tiny-sd3-base" / "transformer").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    (tmp_path / "demo-base" / "vae" / "config.json").unlink()
    (tmp_path / "demo-base" / "extra.bin").write_bytes(b"x")
    done = verify(tmp_path)
    assert done.returncode == 1
    assert f"tiny-sd3-base/transformer/{weights.name}: sha256 differs" in done.stderr
    assert "demo-base/vae/config.json: missing" in done.stderr
    assert "demo-base/extra.bin: not listed in demo-base.json" in done.stderr
