"""One supervised process of a local cluster, and ``manage.py`` runs with a node's environment.

Each process starts in its own session (``start_new_session=True``), so it leads its own
process group: a signal goes to the group (``os.killpg``) and takes the process's
children with it (Celery's pool, a shell's child), and the terminal's Ctrl-C reaches only
the launcher, which then stops everything in order. Output goes through a pipe to one
log file per process (appended on restart); a pipe rather than the file itself so that
readiness lines are seen as they are printed, and so that a process outliving a crashed
launcher dies on its next write instead of running on unseen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from distdb.cluster.config import (
    MANAGE_PY,
    ROOT,
    ClusterConfig,
    ClusterError,
    ProcessSpec,
    caller_env,
    node_env,
)

Echo = Callable[[str, str], None]  # (process name, output line)


class Process:
    """A cluster process by name: start, kill, stop, pause, resume, wait until ready."""

    def __init__(self, spec: ProcessSpec, log_path: Path, echo: Echo | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.log_path = log_path
        self.echo = echo
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.expected_exit = False  # set by kill/stop: an exit the launcher asked for
        self._ready_line = threading.Event()
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The process's pid, which is also its process group id; None before the first start."""
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def start(self) -> None:
        if self.running:
            raise ClusterError(f"{self.name} is already running (pid {self.pid})")
        self._join_pump()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab" if self.starts else "wb")
        self._ready_line.clear()
        self.expected_exit = False
        try:
            self.popen = subprocess.Popen(
                self.spec.argv,
                env={**caller_env(), **self.spec.env},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError:
            log.close()
            raise
        self.starts += 1
        self._pump = threading.Thread(
            target=self._copy_output, args=(self.popen, log), name=f"log-{self.name}", daemon=True
        )
        self._pump.start()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process's group (nothing if the group is gone)."""
        if self.popen is None:
            return
        if self.popen.poll() is not None and not group_members(self.popen.pid):
            return  # gone with its whole group: the id may be another process's by now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process and its children, as a crash would; returns once it is gone."""
        self.expected_exit = True
        self.signal(signal.SIGKILL)
        self._reap(timeout=30)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``; then SIGKILL any child left."""
        if self.popen is None:
            return
        self.expected_exit = True
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)  # a paused process must run to handle its SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        # Whatever is left of the group: the leader if it ignored SIGTERM, or children
        # that outlived it. The group id stays reserved while any member lives.
        self.signal(signal.SIGKILL)
        self._reap(timeout=30)

    def pause(self) -> None:
        """SIGSTOP the group: the process holds its sockets but answers nothing."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def is_ready(self) -> bool:
        """Whether it answers: its HTTP URL responds, or it printed its ready line since start."""
        if not self.running:
            return False
        if self.spec.ready_line is not None and not self._ready_line.is_set():
            return False
        if self.spec.ready_url is not None:
            return _http_answers(self.spec.ready_url)
        return True

    def wait_ready(self, deadline: float) -> None:
        """Until ready, or ClusterError (with the end of its log) at ``deadline`` (monotonic)
        or as soon as the process exits."""
        while not self.is_ready():
            if not self.running:
                self._join_pump(timeout=2)  # its last words, for the message
                raise ClusterError(
                    f"{self.name} exited with {self.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name} was not ready in time:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "".join(text.splitlines(True)[-lines:])

    def _copy_output(self, popen: subprocess.Popen[bytes], log: BinaryIO) -> None:
        assert popen.stdout is not None
        wanted = self.spec.ready_line
        with log:
            log.write(f"=== {self.name} started (pid {popen.pid}) ===\n".encode())
            for raw in popen.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace")
                if wanted is not None and wanted in line:
                    self._ready_line.set()
                if self.echo is not None:
                    self.echo(self.name, line)
        popen.stdout.close()

    def _reap(self, timeout: float) -> None:
        assert self.popen is not None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:  # not even SIGKILL: a process stuck in the kernel
            raise ClusterError(f"{self.name} (pid {self.popen.pid}) did not exit") from None
        self._join_pump()

    def _join_pump(self, timeout: float = 10) -> None:
        # The pipe closes once every process of the group has gone.
        if self._pump is not None:
            self._pump.join(timeout)
            if not self._pump.is_alive():
                self._pump = None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc (Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")".
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def manage(
    cfg: ClusterConfig,
    node_id: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
) -> str:
    """``manage.py <args>`` as ``node_id`` of the cluster; its stdout.

    With ``check``, a non-zero exit raises ClusterError carrying the output's end.
    """
    done = subprocess.run(
        cfg.in_netns(node_id, (sys.executable, str(MANAGE_PY), *args)),
        env={**caller_env(), **node_env(cfg, cfg.node(node_id)), **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise ClusterError(f"{node_id}: manage.py {' '.join(args)} failed:\n{output}")
    return done.stdout


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            status: int = resp.status
            return status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False
