"""Check the shipped demo base against its record (assets/demo-base.json) before the demo uses it:
every file's sha256, and no file the record does not list. Exit 1 naming what differs."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "assets"


def main() -> int:
    record = json.loads((ROOT / "demo-base.json").read_text())
    base = ROOT / "demo-base"
    found = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
    problems = [f"{name}: not listed in demo-base.json" for name in sorted(found - set(record["sha256"]))]
    for name, want in sorted(record["sha256"].items()):
        path = base / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != want:
            problems.append(f"{name}: sha256 differs from the record (rebuild with scripts/build_demo_base.sh)")
    if problems:
        print("assets/demo-base does not match assets/demo-base.json:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"assets/demo-base: {len(found)} files match demo-base.json (built at {record['code_commit'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
