"""The fault matrix's own folder: every test here carries the `faults` marker (`pytest -m faults`
runs these and the fault cases kept beside the code they break)."""
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.faults)
