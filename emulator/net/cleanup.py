"""Run state files and exact cleanup: remove what one run created, nothing else.

Before a run creates anything it writes ``/run/aigc-emu/<run_id>.json`` (``STATE_DIR``) with
its owner pid and the names it is about to create; as processes start (Mininet host shells, the
delay relay, programs started with ``EmulatedNetwork.popen``) their pid and kernel start time are
added. Teardown removes exactly those names and processes, then the file. After a ``kill -9``,
``python -m emulator.doctor --cleanup RUN_ID`` (or ``--cleanup-all`` for every run whose owner
is dead) does the same from the file. A pid is signalled only when its start time still
matches, so a recycled pid is never killed; ``mn -c`` (kill by name) is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emulator.net.errors import NetError

__all__ = [
    "STATE_DIR",
    "RunState",
    "cleanup_all",
    "cleanup_run",
    "kill_tracked",
    "list_runs",
    "proc_start_time",
]

STATE_DIR: Path = Path(os.environ.get("AIGC_EMU_STATE_DIR", "/run/aigc-emu"))


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), or ``None`` if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass
class TrackedProc:
    """A process a run started: killed at teardown only if ``start`` still matches."""

    pid: int
    start: int
    tag: str


@dataclass
class RunState:
    """What one run created (or is about to), persisted as JSON in :data:`STATE_DIR`."""

    run_id: str
    owner_pid: int
    owner_start: int
    links: list[str] = field(default_factory=list)
    procs: list[TrackedProc] = field(default_factory=list)
    created_unix: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        """Write the state atomically (temp file + rename)."""
        try:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=1))
            tmp.replace(self.path)
        except OSError as exc:
            raise NetError(f"cannot write run state {self.path}: {exc} (run as root)") from exc

    def track(self, pid: int, tag: str) -> None:
        """Record a started process and save."""
        start = proc_start_time(pid)
        if start is not None:
            self.procs.append(TrackedProc(pid, start, tag))
            self.save()

    def owner_alive(self) -> bool:
        return proc_start_time(self.owner_pid) == self.owner_start

    @classmethod
    def new(cls, run_id: str) -> RunState:
        if (STATE_DIR / f"{run_id}.json").exists():
            raise NetError(
                f"run id {run_id!r} already has a state file in {STATE_DIR}; pick another id or "
                f"clean it up: python -m emulator.doctor --cleanup {run_id}"
            )
        pid = os.getpid()
        start = proc_start_time(pid)
        assert start is not None
        return cls(run_id, pid, start)

    @classmethod
    def load(cls, run_id: str) -> RunState:
        path = STATE_DIR / f"{run_id}.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NetError(
                f"no state file {path}; known runs: {', '.join(list_runs()) or 'none'}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise NetError(f"unreadable run state {path}: {exc}") from exc
        procs = [TrackedProc(**p) for p in raw.pop("procs", [])]
        return cls(procs=procs, **raw)


def list_runs() -> list[str]:
    """Run ids that have a state file, sorted."""
    if not STATE_DIR.is_dir():
        return []
    return sorted(p.stem for p in STATE_DIR.glob("*.json"))


def kill_tracked(procs: list[TrackedProc], grace_s: float = 1.0) -> list[str]:
    """SIGTERM (process group first) every live tracked process, SIGKILL after ``grace_s``."""
    done: list[str] = []
    live = [p for p in procs if proc_start_time(p.pid) == p.start]
    for p in live:
        _signal(p.pid, signal.SIGTERM)
        done.append(f"kill {p.pid} ({p.tag})")
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = [p for p in live if proc_start_time(p.pid) == p.start and not _zombie(p.pid)]
        if live:
            time.sleep(0.02)
    for p in live:
        _signal(p.pid, signal.SIGKILL)
        done.append(f"kill -9 {p.pid} ({p.tag})")
    return done


def _signal(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` if there is one, else the process."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def link_exists(name: str) -> bool:
    """Whether a link of that exact name exists in the root namespace."""
    return Path(f"/sys/class/net/{name}").exists()


def delete_links(names: list[str]) -> list[str]:
    """``ip link del`` each existing name (in reverse creation order)."""
    done: list[str] = []
    for name in reversed(names):
        if link_exists(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
            done.append(f"ip link del {name}")
    return done


def _host_shells(run_id: str) -> list[TrackedProc]:
    """Mininet host shells of this run (argument exactly ``mininet:<id>d<N>`` or
    ``mininet:<id>m``), found even if the run died before recording their pids."""
    pat = re.compile(rf"^mininet:{re.escape(run_id)}(d\d+|m)$")
    found: list[TrackedProc] = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(pat.match(a.decode(errors="replace")) for a in args):
            start = proc_start_time(int(d.name))
            if start is not None:
                found.append(TrackedProc(int(d.name), start, "mininet shell"))
    return found


def cleanup_run(run_id: str, *, force: bool = False) -> list[str]:
    """Remove what run ``run_id`` created (from its state file); returns the actions taken.

    :param force: also when the owner process is still alive (it may be mid-teardown).
    :raises NetError: no state file, or the owner is alive and ``force`` is false.
    """
    state = RunState.load(run_id)
    if state.owner_alive() and not force and state.owner_pid != os.getpid():
        raise NetError(
            f"run {run_id} is still owned by live pid {state.owner_pid}; stop it (Ctrl-C / "
            f"kill {state.owner_pid}) or pass --force"
        )
    known = {(p.pid, p.start) for p in state.procs}
    extra = [p for p in _host_shells(run_id) if (p.pid, p.start) not in known]
    done = kill_tracked(state.procs + extra)
    done += delete_links(state.links)
    state.path.unlink(missing_ok=True)
    done.append(f"rm {state.path}")
    return done


def cleanup_all() -> dict[str, list[str]]:
    """Clean up every run whose owner process is dead; returns actions per run id."""
    out: dict[str, list[str]] = {}
    for rid in list_runs():
        try:
            state = RunState.load(rid)
        except NetError:
            continue
        if not state.owner_alive():
            out[rid] = cleanup_run(rid)
    return out
