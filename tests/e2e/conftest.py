import fcntl
import os

import pytest

from berth_harness import Berth, EtcdCluster, build_test_image, remove_task_containers


@pytest.fixture(autouse=True)
def _one_at_a_time_on_this_host(request):
    """Tests marked `xdist_group(NAME)` share host state (the default VPC's
    host route and load balancer addresses, an etcd cluster's load): they
    hold a host-wide lock per group for their whole run, fixtures included
    (autouse fixtures are set up first and torn down last). `--dist
    loadgroup` alone does not keep them apart: with pytest 9 and
    pytest-xdist 3.8 the group suffix it puts on node ids is lost, so a
    group's tests are spread over the workers."""
    names = sorted({(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in request.node.iter_markers("xdist_group")})
    held = []
    try:
        for name in names:
            fd = os.open(f"/tmp/berth-e2e-{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)
        yield
    finally:
        for fd in held + _HELD_BLOCKS:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        _HELD_BLOCKS.clear()


# The VPC blocks this worker's current test holds (see `vpc_block`).
_HELD_BLOCKS = []


def vpc_block():
    """The second octet of a 10.N.0.0/16 block that no other test on this
    host holds, kept until the test ends. Load balancer addresses (and
    awsvpc routes) of a VPC live on the host: tests whose load balancers
    sit in a VPC of their own with such a block run beside each other,
    where tests on the default VPC (172.31.0.0/16) take turns."""
    for octet in range(100, 200):
        fd = os.open(f"/tmp/berth-e2e-vpc-10.{octet}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _HELD_BLOCKS.append(fd)
        return octet
    raise RuntimeError("every test VPC block 10.100-199.0.0/16 is held")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the warnings and errors its servers
    logged: CI shows only the report, and the data dirs go with the run."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Berth):
            report.sections.append((f"berth {name}: warnings and errors (last 40)",
                                    value.warnings()))


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
