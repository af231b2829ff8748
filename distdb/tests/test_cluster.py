"""The launcher's own logic: process list, names, environment, ports, and supervising one
process (its group, signals, log, readiness) with tiny shell commands instead of servers."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from distdb.cluster import (
    ClusterConfig,
    ClusterError,
    LocalCluster,
    Process,
    ProcessSpec,
    group_members,
)
from distdb.cluster.config import cluster_processes, redis_argv

MAKE_RUN = [
    "redis",
    "master",
    "worker",
    "beat",
    "tablet-1",
    "tablet-1-link",
    "tablet-2",
    "tablet-2-link",
    "client-1",
    "client-2",
]


@pytest.fixture
def cfg(tmp_path) -> ClusterConfig:
    return ClusterConfig(tmp_path / "data")


# --- what a cluster is made of ----------------------------------------------------------------


def test_the_default_cluster_is_what_make_run_starts_on_its_documented_ports(cfg):
    procs = cluster_processes(cfg, redis=True)
    assert [p.name for p in procs] == MAKE_RUN
    ports = {n.node_id: n.port for n in cfg.nodes}
    assert ports == {
        "master": 3000,
        "tablet-1": 7000,
        "tablet-2": 8000,
        "client-1": 5000,
        "client-2": 6000,
    }


def test_redis_is_left_out_when_one_answers_and_celery_when_not_wanted(tmp_path):
    cfg = ClusterConfig(tmp_path, celery=False, tablet_ports=[1], client_ports=[2, 3, 4])
    names = [p.name for p in cluster_processes(cfg, redis=False)]
    assert names == ["master", "tablet-1", "tablet-1-link", "client-1", "client-2", "client-3"]


def test_each_process_runs_as_its_node_of_this_cluster(tmp_path):
    cfg = ClusterConfig(
        tmp_path, master_port=3100, redis_url="redis://127.0.0.1:6400/0", env={"X_EXTRA": "1"}
    )
    procs = {p.name: p for p in cluster_processes(cfg, redis=False)}
    link = procs["tablet-2-link"]
    assert link.node == "tablet-2"
    assert link.argv[-1] == "tablet_link"
    assert link.env == {
        "X_EXTRA": "1",
        "DJANGO_SETTINGS_MODULE": "distdb.settings.tablet",
        "DISTDB_NODE_ID": "tablet-2",
        "DISTDB_PORT": "8000",
        "DISTDB_HOST": "127.0.0.1",
        "DISTDB_DATA_DIR": str(tmp_path),
        "DISTDB_DEFAULT_RF": "1",
        "DISTDB_MASTER_URL": "http://127.0.0.1:3100",
        "DISTDB_REDIS_URL": "redis://127.0.0.1:6400/0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics" / "tablet-2"),
        "PYTHONUNBUFFERED": "1",
    }
    assert procs["worker"].env["DJANGO_SETTINGS_MODULE"] == "distdb.settings.master"
    assert procs["client-1"].env["DJANGO_SETTINGS_MODULE"] == "distdb.settings.client"
    # The master is runserver, without the autoreloader (it would fork a second server
    # that outlives a kill); tablets and clients are the chosen ASGI server.
    assert procs["master"].argv[-2:] == ("runserver", "--noreload")
    assert procs["client-1"].argv[1:4] == ("-m", "uvicorn", "distdb.asgi:application")


@pytest.mark.parametrize("server", ["uvicorn", "granian", "hypercorn"])
def test_every_server_serves_the_same_application_on_the_nodes_port(tmp_path, server):
    cfg = ClusterConfig(tmp_path, server=server, client_workers=3)
    procs = {p.name: p for p in cluster_processes(cfg, redis=False)}
    for name, port, workers in (("tablet-1", "7000", "1"), ("client-2", "6000", "3")):
        argv = " ".join(procs[name].argv)
        assert f"-m {server} " in argv and "distdb.asgi:application" in argv
        assert port in argv and f"--workers {workers}" in argv, argv
    assert procs["master"].argv[-2:] == ("runserver", "--noreload")


def test_daphne_is_runserver_for_every_node(tmp_path):
    cfg = ClusterConfig(tmp_path, server="daphne")
    procs = cluster_processes(cfg, redis=False)
    servers = [p for p in procs if p.name in cfg.node_ids]
    assert all(p.argv[-2:] == ("runserver", "--noreload") for p in servers)


def test_with_the_link_in_the_server_a_tablet_is_one_process_ready_once_linked(tmp_path):
    cfg = ClusterConfig(tmp_path, link_in_server=True)
    procs = {p.name: p for p in cluster_processes(cfg, redis=False)}
    assert "tablet-1-link" not in procs and "tablet-2-link" not in procs
    tablet = procs["tablet-1"]
    assert tablet.env["DISTDB_LINK_IN_SERVER"] == "1"
    assert tablet.ready_line == "linked to the master as" and tablet.ready_url
    assert "DISTDB_LINK_IN_SERVER" not in procs["client-1"].env


def test_daphne_cannot_run_the_link_and_an_unknown_server_is_refused(tmp_path):
    with pytest.raises(ClusterError, match="lifespan"):
        ClusterConfig(tmp_path, server="daphne", link_in_server=True)
    with pytest.raises(ClusterError, match="unknown server"):
        ClusterConfig(tmp_path, server="gunicorn")


def test_servers_are_ready_when_they_answer_http_the_others_when_they_say_so(cfg):
    procs = {p.name: p for p in cluster_processes(cfg, redis=True)}
    assert procs["tablet-1"].ready_url == "http://127.0.0.1:7000/admin/login/"
    assert procs["client-2"].ready_url == "http://127.0.0.1:6000/admin/login/"
    for name in ("redis", "worker", "beat", "tablet-1-link", "tablet-2-link"):
        assert procs[name].ready_url is None and procs[name].ready_line, name


def test_redis_listens_on_the_clusters_port_and_keeps_nothing_on_disk(tmp_path):
    argv = redis_argv(ClusterConfig(tmp_path, redis_url="redis://localhost:6555/2"))
    assert argv[argv.index("--port") + 1] == "6555"
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--dir") + 1] == str(tmp_path / "redis")


def test_a_remote_redis_that_does_not_answer_is_an_error_not_started_here(tmp_path):
    cfg = ClusterConfig(tmp_path, redis_url="redis://redis.example:6379/0")
    with pytest.raises(ClusterError, match="not reachable"):
        cluster_processes(cfg, redis=True)


def test_a_cluster_on_free_ports_uses_distinct_ports_nobody_listens_on(tmp_path):
    cfg = ClusterConfig.on_free_ports(tmp_path, tablets=3, clients=2, celery=False)
    ports = [cfg.master_port, *cfg.tablet_ports, *cfg.client_ports, cfg.redis_port]
    assert len(ports) == len(set(ports)) == 7
    assert [n.node_id for n in cfg.nodes][1:4] == ["tablet-1", "tablet-2", "tablet-3"]
    assert not cfg.celery
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # raises if it were taken


def test_processes_are_found_by_name_and_a_wrong_name_lists_the_right_ones(cfg):
    cluster = LocalCluster(cfg, redis=False)
    assert cluster.process("tablet-2-link").spec.node == "tablet-2"
    assert cluster.processes["client-1"].log_path == cfg.data_dir / "logs" / "client-1.log"
    with pytest.raises(ClusterError, match="tablet-1-link"):
        cluster.process("tablet-9")
    with pytest.raises(ClusterError, match="at least one"):
        cluster.kill()  # never "every process" by accident
    with pytest.raises(ClusterError, match="client-1"):
        cluster.node_url("client-9")
    assert cluster.node_url("client-2") == "http://127.0.0.1:6000"
    assert cluster.env("tablet-1")["DISTDB_NODE_ID"] == "tablet-1"
    assert "DJANGO_SETTINGS_MODULE" in cluster.env("tablet-1")  # its own, not the caller's
    assert cluster.env("tablet-1")["DJANGO_SETTINGS_MODULE"] == "distdb.settings.tablet"


# --- one supervised process -------------------------------------------------------------------


def _process(tmp_path: Path, script: str, ready_line: str | None = "ready") -> Process:
    spec = ProcessSpec("p", "", ("sh", "-c", script), {}, ready_line=ready_line)
    return Process(spec, tmp_path / "p.log")


def _until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _states(pgid: int) -> set[str]:
    states = set()
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            states.add(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0])
    return states


@pytest.fixture
def sleeper(tmp_path):
    """A shell with a child (``sleep``), like a server with its worker processes."""
    proc = _process(tmp_path, "sleep 60 & echo ready; wait")
    proc.start()
    proc.wait_ready(time.monotonic() + 10)
    yield proc
    proc.kill()


def test_kill_takes_the_process_and_its_children(sleeper):
    pgid = sleeper.pid
    assert len(group_members(pgid)) == 2  # sh and its sleep
    sleeper.kill()
    assert group_members(pgid) == []
    assert not sleeper.running and sleeper.expected_exit


def test_pause_stops_the_whole_group_and_resume_lets_it_run(sleeper):
    sleeper.pause()
    _until(lambda: _states(sleeper.pid) == {"T"})
    sleeper.resume()
    _until(lambda: "T" not in _states(sleeper.pid))
    assert sleeper.running


def test_stop_kills_what_ignores_sigterm_after_the_timeout(tmp_path):
    proc = _process(tmp_path, "trap '' TERM; sleep 60 & echo ready; wait")
    proc.start()
    proc.wait_ready(time.monotonic() + 10)
    pgid, began = proc.pid, time.monotonic()
    proc.stop(timeout=0.5)
    assert time.monotonic() - began >= 0.5
    assert group_members(pgid) == []


def test_a_restart_appends_to_the_same_log_and_waits_for_a_new_ready_line(tmp_path):
    proc = _process(tmp_path, "echo ready; sleep 60")
    for _ in range(2):
        proc.start()
        proc.wait_ready(time.monotonic() + 10)
        proc.kill()
    log = proc.log_path.read_text()
    assert log.count("=== p started") == 2 and log.count("ready") == 2


def test_wait_ready_fails_at_once_with_the_log_when_the_process_exits(tmp_path):
    proc = _process(tmp_path, "echo boom; exit 3")
    proc.start()
    with pytest.raises(ClusterError, match=r"(?s)exited with 3.*boom"):
        proc.wait_ready(time.monotonic() + 60)


def test_wait_ready_gives_up_at_its_deadline(tmp_path):
    proc = _process(tmp_path, "sleep 60", ready_line="never printed")
    proc.start()
    try:
        with pytest.raises(ClusterError, match="not ready in time"):
            proc.wait_ready(time.monotonic() + 0.3)
    finally:
        proc.kill()


def test_starting_a_running_process_again_is_an_error(sleeper):
    with pytest.raises(ClusterError, match="already running"):
        sleeper.start()


# --- preparing a cluster: tokens are signed (and recorded) after the databases exist ----------


@pytest.fixture
def prepared(settings, tmp_path, monkeypatch):
    """``cluster_prepare`` with ``manage.py`` calls recorded instead of run; returns
    (config, calls). ``sign_jwt`` "writes" a token as the real command would."""
    from distdb import auth
    from distdb.cluster import prepare

    settings.DISTDB_TOKENS_DIR = tmp_path / "tokens"
    cfg = ClusterConfig.on_free_ports(tmp_path / "data")
    calls: list[tuple[str, ...]] = []

    def manage(cfg: ClusterConfig, node_id: str, *args: str, **kwargs: object) -> str:
        calls.append(args)
        if args[0] == "sign_jwt":
            node, role = args[1], args[2]
            url = args[args.index("--url") + 1] if "--url" in args else None
            out = Path(args[args.index("--out") + 1])
            out.write_text(auth.token_sign(node, role, url=url) + "\n")
        if args[0] == "issue_api_token":
            Path(args[-1]).write_text("api\n")
        return ""

    monkeypatch.setattr(prepare, "manage", manage)
    return cfg, calls


def test_prepare_signs_each_servers_token_after_migrating_and_binds_a_tablets_url(prepared):
    from django.conf import settings

    from distdb.auth import token_verify
    from distdb.cluster.prepare import cluster_prepare

    cfg, calls = prepared
    cluster_prepare(cfg, log=lambda m: None)
    commands = [c[0] for c in calls]
    last_setup = max(i for i, c in enumerate(commands) if c == "setup_node")
    signed = [i for i, c in enumerate(commands) if c == "sign_jwt"]
    assert len(signed) == 4 and min(signed) > last_setup  # the record needs the table
    for node in cfg.nodes:
        if node.role == "master":
            continue
        token = (settings.DISTDB_TOKENS_DIR / f"{node.node_id}.jwt").read_text().strip()
        claims = token_verify(token, roles=(node.role,))
        expected = cfg.url(node.port) if node.role == "tablet" else None
        assert (claims.sub, claims.url) == (node.node_id, expected)


def test_prepare_keeps_valid_tokens_and_signs_again_a_tablets_without_its_url(prepared):
    from django.conf import settings

    from distdb.auth import token_sign
    from distdb.cluster.prepare import cluster_prepare

    cfg, calls = prepared
    cluster_prepare(cfg, log=lambda m: None)
    (settings.DISTDB_TOKENS_DIR / "tablet-1.jwt").write_text(token_sign("tablet-1", "tablet"))
    calls.clear()
    cluster_prepare(cfg, log=lambda m: None)
    assert [c[:2] for c in calls if c[0] == "sign_jwt"] == [("sign_jwt", "tablet-1")]


def test_a_node_with_a_host_of_its_own_binds_there_and_runs_in_its_namespace(tmp_path):
    cfg = ClusterConfig(
        tmp_path,
        redis_url="redis://10.9.0.6:6400/0",
        hosts={"master": "10.9.0.1", "tablet-1": "10.9.0.2", "redis": "10.9.0.6"},
        netns={"master": "ns-master", "tablet-1": "ns-t1", "redis": "ns-redis"},
        env_by_node={"tablet-1": {"DISTDB_DATABASE_URL": "postgres://db.internal/t1"}},
    )
    procs = {p.name: p for p in cluster_processes(cfg, redis=True)}
    assert procs["tablet-1-link"].argv[:4] == ("ip", "netns", "exec", "ns-t1")
    assert procs["worker"].argv[:4] == ("ip", "netns", "exec", "ns-master")
    assert procs["client-1"].argv[0] != "ip"  # no host of its own: as before
    env = procs["tablet-1"].env
    assert env["DISTDB_HOST"] == "10.9.0.2"
    assert env["DISTDB_MASTER_URL"] == "http://10.9.0.1:3000"
    assert env["DISTDB_ALLOWED_HOSTS"] == "10.9.0.2,127.0.0.1,localhost"
    assert env["DISTDB_DATABASE_URL"] == "postgres://db.internal/t1"
    assert "DISTDB_DATABASE_URL" not in procs["tablet-2"].env
    assert procs["tablet-1"].ready_url == "http://10.9.0.2:7000/admin/login/"
    assert cfg.url(5000) == "http://127.0.0.1:5000"
    redis = procs["redis"].argv
    assert redis[:4] == ("ip", "netns", "exec", "ns-redis")
    assert redis[redis.index("--bind") + 1] == "10.9.0.6"
    assert redis[redis.index("--protected-mode") + 1] == "no"


class _FakeProcess:
    """A process that has died (or is running) without starting anything real."""

    def __init__(self, name: str, running: bool) -> None:
        self.name, self.running, self.starts = name, running, 1
        self.expected_exit, self.returncode = False, None if running else -9
        self.restarted = 0

    def start(self) -> None:
        self.running, self.restarted = True, self.restarted + 1


def test_make_run_starts_a_dead_tablet_server_again_but_stops_for_anything_else(
    tmp_path, monkeypatch
):
    from distdb.cluster import launcher

    cluster = LocalCluster(ClusterConfig(tmp_path, redis_url="redis://127.0.0.1:6400/0"),
                           redis=False)  # fmt: skip
    tablet, client = _FakeProcess("tablet-1", False), _FakeProcess("client-1", True)
    cluster.processes = {"tablet-1": tablet, "client-1": client}  # type: ignore[dict-item]
    naps = iter(range(100))

    def nap(seconds: float) -> None:  # the supervision's 0.5 s sleeps, on a fake clock
        if next(naps) == 5:  # the client server dies later on
            client.running, client.returncode = False, 1

    now = [0.0]
    monkeypatch.setattr(launcher.time, "sleep", lambda s: (nap(s), now.__setitem__(0, now[0] + s)))
    monkeypatch.setattr(launcher.time, "monotonic", lambda: now[0])
    assert cluster.supervise(restart_tablets_after_s=2).name == "client-1"
    assert tablet.restarted == 1
