import pytest

from berth_harness import Berth, EtcdCluster, build_test_image, remove_task_containers


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


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    """A three-member etcd cluster on loopback ports, for a module's servers."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def test_image(tmp_path_factory):
    return build_test_image(tmp_path_factory.mktemp("image"))


def instance_ids(server):
    """Every container instance id of every cluster of `server`."""
    ecs = server.client("ecs")
    ids = []
    for cluster in ecs.list_clusters()["clusterArns"]:
        for status in ("ACTIVE", "DRAINING", "INACTIVE"):
            for arn in ecs.list_container_instances(cluster=cluster, status=status)["containerInstanceArns"]:
                ids.append(arn.rsplit("/", 1)[1])
    return ids


@pytest.fixture
def berth_agent(tmp_path, test_image):
    """A server with its in-process agent on the `default` cluster."""
    server = Berth(tmp_path / "data", agent=True).start()
    yield server
    try:
        ids = instance_ids(server)
    finally:
        server.stop()
    remove_task_containers(ids)
