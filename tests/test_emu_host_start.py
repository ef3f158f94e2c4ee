"""A host or helper that cannot start is one clear error within seconds, with nothing left behind.

The failing host is simulated with a stand-in ``mnexec`` first on PATH: for a host start
(``-cdn``) it either fails as ``mnexec`` does in a chroot whose ``/`` is not a mount point
(``remount: Invalid argument``) or never prompts; every other call goes to the real ``mnexec``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emulator.net import EmulatedNetwork, NetConfig, NetError, new_run_id
from emulator.net.cleanup import STATE_DIR
from emulator.net.start import start_hint, wait_line
from traces import Trace

ROOT = Path(__file__).resolve().parents[1]
_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mnexec") is None,
                           reason="needs root and mnexec")


def _fake_mnexec(tmp_path: Path, host_start: str) -> str:
    real = shutil.which("mnexec")
    assert real is not None
    tmp_path.chmod(0o755)
    (tmp_path / "mnexec").write_text(
        f'#!/bin/sh\ncase "$1" in -*n*) {host_start};; esac\nexec {real} "$@"\n')
    (tmp_path / "mnexec").chmod(0o755)
    return f"{tmp_path}:{os.environ['PATH']}"


def _left(rid: str) -> list[str]:
    out = [f"link {n.name}" for n in Path("/sys/class/net").iterdir() if n.name.startswith(rid)]
    if (STATE_DIR / f"{rid}.json").exists():
        out.append("state file")
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                args = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"mininet:{rid}" in args or "sleep 3600" in args.replace("\0", " "):
                out.append(f"process {d.name}: {args!r}")
    return out


def test_start_hint_names_the_cause() -> None:
    assert "not a mount point" in start_hint("remount: Invalid argument")
    assert "CONFIG_NET_NS" in start_hint("unshare: Invalid argument")
    assert "restricted container" in start_hint("unshare: Operation not permitted")
    assert "emulator.doctor" in start_hint("")


def test_wait_line_bounded() -> None:
    for code, wait_s, expect in [
            ("import time; time.sleep(30)", 0.5, "the helper did not start within 0.5 s"),
            ("import sys; sys.exit(3)", 20.0, "the helper exited with code 3 before it was ready"),
            ("print('nope', flush=True)", 20.0, "printed 'nope', expected 'ready'")]:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        t = time.monotonic()
        with pytest.raises(NetError, match=re.escape(expect)):
            wait_line(p, "ready", wait_s, "the helper")
        assert time.monotonic() - t < wait_s + 2.0
        p.kill()
        p.wait()
    p = subprocess.Popen([sys.executable, "-c", "print('ready')"], stdout=subprocess.PIPE,
                         text=True)
    wait_line(p, "ready", 10.0, "the helper")
    p.wait()


@_root
@pytest.mark.root
@pytest.mark.parametrize("mode", ["fails", "hangs"])
def test_host_that_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                mode: str) -> None:
    from emulator.net.host import BoundedHost

    action = 'echo "remount: Invalid argument" >&2; exit 1' if mode == "fails" else \
        "exec sleep 3600"
    monkeypatch.setenv("PATH", _fake_mnexec(tmp_path, action))
    monkeypatch.setattr(BoundedHost, "start_timeout_s", 2.0)
    rid = new_run_id()
    trace = Trace(np.array([0.0]), np.array([10e6]), 10.0, name="const")
    seen: set[str] = set()
    unrecorded: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # everything of the run that exists must already be in its state file
        while not done.is_set():
            links = {n.name for n in Path("/sys/class/net").iterdir() if n.name.startswith(rid)}
            try:
                state = json.loads((STATE_DIR / f"{rid}.json").read_text())
            except (OSError, ValueError):
                state = {"links": []}
            seen.update(links)
            unrecorded.update(links - set(state["links"]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t = time.monotonic()
    try:
        with pytest.raises(NetError) as err, \
                EmulatedNetwork(NetConfig(n_devices=2, uplink=trace, run_id=rid), verbose=False):
            pass
    finally:
        done.set()
        watcher.join()
    took = time.monotonic() - t
    assert unrecorded == set(), unrecorded
    # the failed host's pty is closed and forgotten: a stale node in Mininet's fd -> node map
    # would close that fd number again when freed, by then another host's pty
    assert not [n for n in BoundedHost.outToNode.values()
                if isinstance(n, BoundedHost) and n.name.startswith(rid)]
    if mode == "hangs":
        assert f"{rid}iu" in seen  # the uplink IFB existed (and was on record) during the wait
    msg = str(err.value)
    assert f"Mininet host {rid}d0" in msg and "\n" not in msg
    if mode == "fails":
        assert "exited with code 1" in msg and "remount: Invalid argument" in msg
        assert "not a mount point" in msg
    else:
        assert "did not start within 2 s" in msg
    assert took < 15.0, took
    assert _left(rid) == []


@_root
@pytest.mark.root
def test_run_with_a_host_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    env = {**os.environ,
           "PATH": _fake_mnexec(tmp_path / "bin", 'echo "remount: Invalid argument" >&2; exit 1')}
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "emulator.run", "--duration", "5", "--out",
                          str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    took = time.monotonic() - t
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "Mininet host" in ln]
    assert len(errors) == 1 and "not a mount point" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert took < 30.0, took
    rid = re.search(r"Mininet host (\w+)d0 ", errors[0])
    assert rid is not None and _left(rid.group(1)) == []
    assert not (tmp_path / "out" / "requests.jsonl").exists()
