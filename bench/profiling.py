"""``--profile``: sample the cluster's server processes with py-spy while a workload runs.

py-spy attaches to the running ``runserver`` processes by pid (``cluster.server_pids``),
so the servers run exactly as they do without profiling — no product change, no wrapper
command — and it sees every thread: the Daphne event loop *and* the worker threads that do
the database work (an in-process profiler such as pyinstrument sees only the thread it
started in). ``--nonblocking`` keeps the servers running between samples (the blocking
mode cut the measured throughput by two thirds here).

py-spy's own idle detection does not work in this container (threads parked in
``queue.get`` or ``epoll`` count as running), so every sample is recorded (``--idle``)
and ``is_idle`` classifies them: a stack whose innermost frame is a known blocking wait
is idle, unless it runs inside an event-loop callback — then the wait blocks the loop and
is exactly what a request pays for.

Per workload and node it writes the collapsed stacks (``<node>.collapsed.txt``: open them
in speedscope or feed them to flamegraph.pl) and a text summary (``<node>.txt``): CPU share
by package, and the top functions by self and by inclusive time, over active samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

RATE_HZ = 200
# Innermost frames of a thread that waits (the C call below them blocks): a pool worker
# waiting for work, the event loop waiting in epoll, a join or condition wait.
IDLE_LEAVES = frozenset(
    {
        "_worker (concurrent/futures/thread.py)",
        "EpollSelector.select (selectors.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
        "SimpleQueue.get (queue.py)",
        "Queue.get (queue.py)",
        # uvloop's event loop is C: a thread in ``loop.run_forever`` with no Python frame
        # above it waits in epoll or moves bytes through sockets inside libuv, which is
        # the socket I/O a profile should end up dominated by, not Python work.
        "Runner.run (asyncio/runners.py)",
    }
)
LOOP_CALLBACK = "Handle._run (asyncio/events.py)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """Start py-spy on every server for one workload (``start``), then ``stop`` and summarise."""

    def __init__(self, out_dir: Path, pids: dict[str, int], rate_hz: int = RATE_HZ) -> None:
        self.out_dir, self.pids, self.rate = out_dir, pids, rate_hz
        self.binary = py_spy_path()
        self._running: list[tuple[str, Path, subprocess.Popen]] = []

    @property
    def available(self) -> bool:
        return self.binary is not None and bool(self.pids)

    def start(self, tag: str) -> None:
        if not self.available:
            return
        folder = self.out_dir / tag
        folder.mkdir(parents=True, exist_ok=True)
        for node, pid in sorted(self.pids.items()):
            path = folder / f"{node}.collapsed.txt"
            cmd = [str(self.binary), "record", "--pid", str(pid), "--rate", str(self.rate)]
            cmd += ["--format", "raw", "--nonblocking", "--idle", "--subprocesses"]
            cmd += ["-o", str(path)]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._running.append((node, path, proc))

    def stop(self) -> dict[str, dict]:
        """Stop the samplers (SIGINT makes py-spy write its file) and summarise each node."""
        results: dict[str, dict] = {}
        for node, path, proc in self._running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not path.exists():
                results[node] = {"error": err.decode(errors="replace")[-500:]}
                continue
            recorded = read_collapsed(path.read_text())
            stacks = active(recorded)
            summary_path = path.with_name(f"{node}.txt")
            summary_path.write_text(render_summary(node, stacks, self.rate))
            results[node] = {
                "collapsed": str(path),
                "summary": str(summary_path),
                "samples": sum(stacks.values()),
                "recorded_samples": sum(recorded.values()),
                "by_package": top_share(self_by_package(stacks), 8),
            }
        self._running = []
        return results


def read_collapsed(text: str) -> Counter[tuple[str, ...]]:
    """Collapsed stacks ("f1;f2;f3 COUNT" per line, root first) -> Counter of frame tuples."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def frame_name(frame: str) -> str:
    """ "func (file)" without the line number: one name per function."""
    func, file = frame_parts(frame)
    return f"{func} ({file})"


def is_idle(stack: tuple[str, ...]) -> bool:
    """Whether a sample shows a thread waiting, not working (see the module docstring)."""
    if not stack or not stack[-1].strip():
        return True  # a thread with no Python frame at all
    if frame_name(stack[-1]) not in IDLE_LEAVES:
        return False
    return not any(frame_name(f) == LOOP_CALLBACK for f in stack)


def active(stacks: Counter[tuple[str, ...]]) -> Counter[tuple[str, ...]]:
    return Counter({s: n for s, n in stacks.items() if not is_idle(s)})


def frame_parts(frame: str) -> tuple[str, str]:
    """(function, file) of a py-spy frame "func (path/to/file.py:123)"."""
    match = _FRAME.match(frame)
    if not match:
        return frame, ""
    return match["func"], match["file"]


def package_of(file: str) -> str:
    """The top-level package of a frame's file: "django", "asyncio", "client_app", ..."""
    if not file:
        return "?"
    head = file.split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


def self_by_package(stacks: Counter[tuple[str, ...]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        out[package_of(frame_parts(stack[-1])[1])] += n
    return out


def self_by_function(stacks: Counter[tuple[str, ...]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        out[frame_name(stack[-1])] += n
    return out


def inclusive_by_function(stacks: Counter[tuple[str, ...]]) -> Counter[str]:
    """Samples in which each function is on the stack (counted once per sample)."""
    out: Counter[str] = Counter()
    for stack, n in stacks.items():
        for name in {frame_name(f) for f in stack}:
            out[name] += n
    return out


def top_share(counts: Counter[str], n: int) -> dict[str, float]:
    """The ``n`` largest entries as percentages of the total."""
    total = sum(counts.values()) or 1
    return {k: round(100.0 * v / total, 1) for k, v in counts.most_common(n)}


def render_summary(node: str, stacks: Counter[tuple[str, ...]], rate_hz: int, top: int = 30) -> str:
    total = sum(stacks.values())
    lines = [
        f"{node}: {total} active samples at {rate_hz} Hz (~{total / rate_hz:.1f} s of threads "
        "working or blocking the event loop; idle waits left out)",
        "",
        "CPU by package (self time):",
    ]
    lines += [
        f"  {pct:5.1f}%  {name}" for name, pct in top_share(self_by_package(stacks), 15).items()
    ]
    lines += ["", f"Top {top} functions by self time:"]
    lines += [
        f"  {pct:5.1f}%  {name}" for name, pct in top_share(self_by_function(stacks), top).items()
    ]
    lines += ["", f"Top {top} functions by inclusive time (on the stack):"]
    incl = inclusive_by_function(stacks)
    lines += [f"  {100.0 * v / (total or 1):5.1f}%  {k}" for k, v in incl.most_common(top)]
    return "\n".join(lines) + "\n"
