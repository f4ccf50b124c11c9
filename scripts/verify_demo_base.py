"""Check the demo's shipped bases against their records before the demo uses them: for each of
assets/demo-base (tiny SD, scripts/build_demo_base.sh) and assets/tiny-sd3-base (tiny SD3,
scripts/build_sd3_base.sh), every file's sha256 in assets/<name>.json, and no file the record does
not list. Exit 1 naming what differs. An argument names another assets folder (the tests' copy)."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "assets"
BASES = {"demo-base": "scripts/build_demo_base.sh", "tiny-sd3-base": "scripts/build_sd3_base.sh"}


def problems_of(root: Path, name: str, builder: str) -> list[str]:
    record_file, base = root / f"{name}.json", root / name
    if not record_file.is_file():
        return [f"{name}.json: missing (rebuild with {builder})"]
    record = json.loads(record_file.read_text())
    found = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
    problems = [f"{name}/{f}: not listed in {name}.json" for f in sorted(found - set(record["sha256"]))]
    for f, want in sorted(record["sha256"].items()):
        path = base / f
        if not path.is_file():
            problems.append(f"{name}/{f}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != want:
            problems.append(f"{name}/{f}: sha256 differs from the record (rebuild with {builder})")
    return problems


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    problems = [p for name, builder in BASES.items() for p in problems_of(root, name, builder)]
    if problems:
        print("the shipped bases do not match their records:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    for name in BASES:
        record = json.loads((root / f"{name}.json").read_text())
        print(f"{root.name}/{name}: {len(record['sha256'])} files match {name}.json "
              f"(built at {record['code_commit'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
