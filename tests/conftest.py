import pytest

import orchestrator.models  # noqa: F401  (installs the variant catalog every manifest validates with)

pytest_plugins = ["tests.fixtures_azurite", "tests.fixtures_postgres", "tests.fixtures_browser"]


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module's generation: a second thread spin-waits on a shared 2-core
    machine. (Older modules have their own copy of this; new ones use this one.)"""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
