"""``LocalCluster``: start a whole local cluster and drive any one of its processes by name.

The one launcher (CONVENTIONS §12b) that ``manage.py runcluster`` (``make run``), the
benchmark, the integration tests and a fault harness share::

    cfg = ClusterConfig.on_free_ports(tmp_path)
    with LocalCluster(cfg).up() as cluster:       # prepare, start all, wait until ready
        cluster.pause("client-1"); cluster.resume("client-1")
        cluster.kill("tablet-1"); cluster.start("tablet-1"); cluster.wait_ready("tablet-1")
    # closed: every process and its children are gone

Process names: ``redis`` (only if it started one), ``master``, ``worker``, ``beat``,
``tablet-N`` and ``tablet-N-link``, ``client-N``. Logs: ``<log dir>/<name>.log``.
"""

from __future__ import annotations

import datetime
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from honcho.colour import get_colours
from honcho.printer import Message, Printer

from distdb.cluster.config import (
    ClusterConfig,
    ClusterError,
    ProcessSpec,
    caller_env,
    cluster_processes,
    node_env,
)
from distdb.cluster.process import Process, manage
from distdb.files import private_dir, write_private


class LocalCluster:
    """Every process of one local cluster, started, signalled and stopped by this object.

    Nothing starts on construction; ``up()`` (or ``prepare()`` + ``start()`` +
    ``wait_ready()``) does. ``close()`` stops every process and takes any child with it.
    With ``console``, every line a process prints is echoed, prefixed with its name, in
    honcho's format (what ``make run`` shows).
    """

    def __init__(
        self, cfg: ClusterConfig, *, console: bool = False, redis: bool | None = None
    ) -> None:
        self.cfg = cfg
        if redis is None:  # start one unless a Redis already answers at the cluster's URL
            redis = not redis_reachable(cfg.redis_url_with_password)
        if redis and cfg.redis_password_file is None:
            cfg.redis_password_file = redis_password(cfg.data_dir)
        self.specs: dict[str, ProcessSpec] = {
            s.name: s for s in cluster_processes(cfg, redis=redis)
        }
        self._printer: _Console | None = _Console(list(self.specs)) if console else None
        echo = self._printer.line if self._printer else None
        self.processes: dict[str, Process] = {
            name: Process(spec, cfg.logs / f"{name}.log", echo) for name, spec in self.specs.items()
        }

    # --- the whole cluster ----------------------------------------------------------------------

    def prepare(self, timeout: float = 300) -> None:
        """Keys, tokens, every node's database and admin user, the API token (idempotent).

        Runs ``manage.py runcluster --prepare-only`` as the cluster's master: signing
        needs the master's settings (its key files, its cluster name), which the calling
        process (the benchmark, a test run) does not have. ``runcluster`` itself, already
        running as the master, calls ``cluster_prepare`` directly instead.
        """
        cfg = self.cfg
        manage(
            cfg,
            "master",
            "runcluster",
            "--prepare-only",
            *("--master-port", str(cfg.master_port)),
            *("--tablet-ports", ",".join(map(str, cfg.tablet_ports))),
            *("--client-ports", ",".join(map(str, cfg.client_ports))),
            *(("--node-hosts", node_hosts(cfg)) if cfg.network or cfg.hosts else ()),
            timeout=timeout,
        )

    def up(self, *names: str, timeout: float = 240) -> Self:
        """Prepare, start ``names`` (default: every process) and wait until they are ready.

        On failure it closes what it started and raises ClusterError.
        """
        try:
            self.place()
            self.prepare()
            self.start(*names)
            self.wait_ready(*names, timeout=timeout)
        except BaseException:
            self.close()
            raise
        return self

    def place(self) -> None:
        """The hosts' network namespaces and clock files, when the config asks for them."""
        if self.cfg.network is not None:
            self.cfg.network.create()
        if self.cfg.clock_shift_lib is not None:
            for node_id in self.cfg.node_ids:
                self.clock_step(node_id, 0.0)

    def clock_step(self, node_id: str, offset_s: float) -> None:
        """Set ``node_id``'s wall clock ``offset_s`` seconds from the real one (within a
        second: the shifter re-reads its file once per second); needs ``clock_shift_lib``."""
        if self.cfg.clock_shift_lib is None:
            raise ClusterError("this cluster's clocks cannot be stepped (no clock_shift_lib)")
        write_private(self.cfg.clock_file(node_id), f"{offset_s:.3f}\n")

    def start(self, *names: str) -> None:
        """Start ``names`` (default: every process); Redis first, ready before the rest."""
        procs = self._select(names)
        redis = [p for p in procs if p.name == "redis"]
        if redis:
            private_dir(self.cfg.data_dir / "redis")  # its --dir
            if self.cfg.redis_password_file is not None:
                password = self.cfg.redis_password_file.read_text().strip()
                write_private(self.cfg.redis_config_file, f'requirepass "{password}"\n')
        for proc in redis + [p for p in procs if p.name != "redis"]:
            proc.start()
            self._system(f"{proc.name} started (pid={proc.pid})")
            if proc.name == "redis":
                proc.wait_ready(time.monotonic() + 30)

    def wait_ready(self, *names: str, timeout: float = 180) -> None:
        """Until ``names`` (default: every running process) answer: HTTP for servers, the
        "linked" line for links. ClusterError at the deadline or if one exits meanwhile."""
        deadline = time.monotonic() + timeout
        procs = self._select(names) if names else [p for p in self.processes.values() if p.running]
        for proc in procs:
            proc.wait_ready(deadline)

    def close(self, timeout: float = 20) -> None:
        """Stop every process (SIGTERM, then SIGKILL to whatever of its group is left).

        Redis last, so that the others do not spend their shutdown on a lost broker.
        """
        procs = [p for p in self.processes.values() if p.popen is not None and p.name != "redis"]
        if procs:
            with ThreadPoolExecutor(len(procs)) as pool:
                list(pool.map(lambda p: p.stop(timeout), procs))
        if "redis" in self.processes:
            self.processes["redis"].stop(timeout)
        if self.cfg.network is not None:
            self.cfg.network.destroy()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def supervise(self, *, restart_tablets_after_s: float | None = None) -> Process:
        """Block until a process exits that nobody asked to stop, and return it
        (``make run`` then stops the rest). Ctrl-C raises KeyboardInterrupt as usual.

        ``restart_tablets_after_s``: a tablet server (or its link) that dies is started
        again after that long instead, the rest serving on meanwhile — what a replicated
        cluster is for: its ranges fail over to their followers, and it rejoins as a
        follower (``make run``). Any other process exiting still ends the supervision.
        """
        due: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for proc in self.processes.values():
                if proc.name in due:
                    if now >= due[proc.name]:
                        del due[proc.name]
                        self._system(f"starting {proc.name} again")
                        proc.start()
                    continue
                if proc.starts and not proc.running and not proc.expected_exit:
                    self._system(f"{proc.name} exited with code {proc.returncode}")
                    if restart_tablets_after_s is None or not proc.name.startswith("tablet-"):
                        return proc
                    self._system(
                        f"{proc.name}: its ranges fail over to their followers; starting it "
                        f"again in {restart_tablets_after_s:.0f} s"
                    )
                    due[proc.name] = now + restart_tablets_after_s
            time.sleep(0.5)

    # --- one process ----------------------------------------------------------------------------

    def process(self, name: str) -> Process:
        try:
            return self.processes[name]
        except KeyError:
            known = ", ".join(self.processes)
            raise ClusterError(f"no process {name!r} (processes: {known})") from None

    def kill(self, *names: str) -> None:
        """SIGKILL each process and its children, as a crash would."""
        for proc in self._select(names, every=False):
            proc.kill()
            self._system(f"{proc.name} killed")

    def stop(self, *names: str, timeout: float = 20) -> None:
        """SIGTERM each process (a clean shutdown), SIGKILL after ``timeout``."""
        for proc in self._select(names, every=False):
            proc.stop(timeout)
            self._system(f"{proc.name} stopped")

    def pause(self, *names: str) -> None:
        """SIGSTOP: the process keeps its sockets and connections but answers nothing."""
        for proc in self._select(names, every=False):
            proc.pause()

    def resume(self, *names: str) -> None:
        """SIGCONT after ``pause``."""
        for proc in self._select(names, every=False):
            proc.resume()

    def restart(self, *names: str, timeout: float = 180) -> None:
        """Stop (if running), start again and wait until ready: same ports, data and log."""
        self.stop(*names)
        self.start(*names)
        self.wait_ready(*names, timeout=timeout)

    def log(self, name: str, lines: int = 60) -> str:
        """The end of a process's log file."""
        return self.process(name).log_tail(lines)

    # --- what a caller needs to talk to it ------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.cfg.data_dir

    @property
    def master_port(self) -> int:
        return self.cfg.master_port

    @property
    def tablet_ports(self) -> list[int]:
        return self.cfg.tablet_ports

    @property
    def client_ports(self) -> list[int]:
        return self.cfg.client_ports

    @property
    def redis_port(self) -> int:
        return self.cfg.redis_port

    @property
    def redis_url(self) -> str:
        """The cluster's Redis, with the password its processes read from a file."""
        return self.cfg.redis_url_with_password

    def url(self, port: int) -> str:
        return self.cfg.url(port)

    def node_url(self, node_id: str) -> str:
        return self.cfg.url(self.cfg.node(node_id).port)

    @property
    def client_urls(self) -> list[str]:
        return [self.url(p) for p in self.client_ports]

    @property
    def api_token(self) -> str:
        """The public API token ``prepare`` issued (``<data dir>/api-token``)."""
        return (self.data_dir / "api-token").read_text().strip()

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    def server_token(self, node_id: str) -> str:
        """A node's server JWT (``<data dir>/tokens/<node>.jwt``)."""
        return (self.data_dir / "tokens" / f"{node_id}.jwt").read_text().strip()

    def env(self, node_id: str = "master") -> dict[str, str]:
        """The full environment of ``node_id``'s processes (for commands run beside them)."""
        return {**caller_env(), **node_env(self.cfg, self.cfg.node(node_id))}

    def manage(
        self,
        *args: str,
        node: str = "master",
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> str:
        """``manage.py <args>`` as ``node``; its stdout (ClusterError if it fails and ``check``)."""
        return manage(self.cfg, node, *args, env=env, check=check, timeout=timeout)

    def shell(self, node_id: str, code: str) -> str:
        """Run Python in ``node_id``'s ``manage.py shell``; the last line it printed."""
        return self.manage("shell", "-c", code, node=node_id).strip().splitlines()[-1]

    def seed(self, fixture: Path, *, tablets: int | None = None, timeout: float = 300) -> str:
        """Load ``fixture`` through the master over ``tablets`` tablet servers (default:
        all), once: a seeded table is left alone. What ``cluster_seed`` printed."""
        tablets = len(self.tablet_ports) if tablets is None else tablets
        args = ["--fixture", str(fixture), "--tablets", str(tablets)]
        return self.manage("cluster_seed", *args, "--no-progress", timeout=timeout).strip()

    # --- helpers --------------------------------------------------------------------------------

    def _select(self, names: tuple[str, ...], *, every: bool = True) -> list[Process]:
        if not names:
            if not every:
                raise ClusterError("name at least one process")
            return list(self.processes.values())
        return [self.process(n) for n in names]

    def _system(self, text: str) -> None:
        if self._printer:
            self._printer.line("system", text)


def node_hosts(cfg: ClusterConfig) -> str:
    """``node=address,...`` for every node (``runcluster --node-hosts``)."""
    return ",".join(f"{n}={cfg.host_of(n)}" for n in cfg.node_ids)


def redis_password(data_dir: Path) -> Path:
    """The file with the password of the cluster's own Redis, made once per data dir."""
    path = data_dir / "redis-password"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24) + "\n")
    return path


def redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except Exception:  # any failure means "start our own"
        return False


class _Console:
    """Process output on stdout in honcho's format (``12:00:01 tablet-1 | ...``)."""

    def __init__(self, names: list[str]) -> None:
        names = [*names, "system"]
        self.printer = Printer(width=max(map(len, names)))
        self.colours = dict(zip(names, get_colours(), strict=False))
        self.lock = threading.Lock()  # one line at a time from the processes' log threads

    def line(self, name: str, text: str) -> None:
        message = Message("line", text, datetime.datetime.now(), name, self.colours.get(name))
        with self.lock:
            self.printer.write(message)
