import pytest

from berth_harness import Berth


@pytest.fixture
def berth(tmp_path):
    server = Berth(tmp_path / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_berth(tmp_path_factory):
    """One server for a module whose tests do not disturb each other."""
    server = Berth(tmp_path_factory.mktemp("berth") / "data").start()
    yield server
    server.stop()
