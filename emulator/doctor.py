"""Preflight checks for the emulated network, and cleanup of runs that did not end cleanly.

``python -m emulator.doctor`` tries every kernel feature and tool the emulator needs (as
root), one line per check with the command that fixes a failure, and exits 1 when a required
check fails. ``--cleanup RUN_ID`` removes what a run created (from its state file in
``/run/aigc-emu``) after a ``kill -9``; ``--cleanup-all`` does it for every run whose owner
process is dead; ``--list`` shows the runs on record. Nothing is ever removed by a name
pattern (no ``mn -c``).

``--measure-rate`` measures the highest constant rate this machine shapes faithfully (one
device, bulk TCP through :func:`emulator.calibrate.calibrate`, rates tried in increasing order
until one has fewer than 90% of its 1 s windows within 5%) and stores it in
:func:`shaping_file`; :func:`shaping_limit` reads it (``emulator.run`` switches to high-rate
mode above it, see :mod:`emulator.transport`). Without a measurement the limit is
:data:`DEFAULT_SHAPING_LIMIT_BPS`, 300 Mbit/s: on the 2-core build machine a constant 300 Mbit/s
trace is followed in 15 of 15 windows, 1 Gbit/s is not (394 Mbit/s delivered, issue 13).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.net import NetError
from emulator.net.cleanup import STATE_DIR, RunState, cleanup_all, cleanup_run, list_runs
from emulator.net.start import start_hint

__all__ = ["DEFAULT_SHAPING_LIMIT_BPS", "SHAPING_FILE_ENV", "Check", "main",
           "measure_shaping_limit", "run_checks", "shaping_file", "shaping_limit"]

DEFAULT_SHAPING_LIMIT_BPS = 300e6
"""The shaping limit when none was measured (see the module docstring)."""
SHAPING_FILE_ENV = "AIGC_EMU_SHAPING_FILE"
_SHAPING_FILE = Path("/var/lib/aigc-emu/shaping.json")
MEASURE_RATES_MBPS = (100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, 2000.0)


def shaping_file() -> Path:
    """Where ``--measure-rate`` stores its result (``$AIGC_EMU_SHAPING_FILE`` or
    ``/var/lib/aigc-emu/shaping.json``)."""
    return Path(os.environ.get(SHAPING_FILE_ENV) or _SHAPING_FILE)


def shaping_limit() -> tuple[float, str]:
    """``(bit/s, where it comes from)``: the measured limit, else the documented default."""
    path = shaping_file()
    try:
        data = json.loads(path.read_text())
        bps = float(data["limit_mbps"]) * 1e6
        if not (math.isfinite(bps) and bps > 0):
            raise ValueError("limit_mbps must be > 0")
    except FileNotFoundError:
        return DEFAULT_SHAPING_LIMIT_BPS, ("default (no measurement; sudo .venv/bin/python -m "
                                           "emulator.doctor --measure-rate)")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return DEFAULT_SHAPING_LIMIT_BPS, f"default ({path} unreadable: {e})"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(data.get("measured_unix", 0))))
    return bps, f"measured by emulator.doctor --measure-rate on {when} ({path})"


def measure_shaping_limit(seconds: float = 6.0, rates_mbps: tuple[float, ...] =
                          MEASURE_RATES_MBPS, tol: float = 0.05, need: float = 0.9,
                          verbose: bool = True) -> dict[str, Any]:
    """Calibrate constant traces at ``rates_mbps`` in turn; the limit is the highest rate
    before the first one with fewer than ``need`` of its windows within ``tol``. Writes and
    returns the record of :func:`shaping_file`."""
    from emulator.calibrate import calibrate
    from emulator.net import NetConfig
    from traces.synth import constant

    tried = []
    limit = 0.0
    for r in rates_mbps:
        res = calibrate(NetConfig(n_devices=1, uplink=constant(seconds + 30.0, r)), seconds,
                        tol=tol, verbose=False)
        frac = float(res["summary"]["fraction_within"])
        tried.append({"rate_mbps": r, "fraction_within": frac})
        if verbose:
            print(f"doctor: constant {r:g} Mbit/s: {frac:.0%} of {seconds:g} windows within "
                  f"{tol:.0%}", flush=True)
        if not frac >= need:
            break
        limit = r
    if limit <= 0:
        raise NetError(f"not even {rates_mbps[0]:g} Mbit/s is shaped faithfully here")
    rec = {"limit_mbps": limit, "measured_unix": time.time(), "cpus": os.cpu_count(),
           "tolerance": tol, "need": need, "seconds": seconds, "tried": tried}
    path = shaping_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1) + "\n")
    return rec

_APT = "apt-get install -y mininet bridge-utils iproute2 ethtool iputils-ping net-tools iperf3"
_TMP = f"aedoc{os.getpid() % 10000}"  # names of the probe interfaces (<= 15 chars)


@dataclass
class Check:
    """One preflight result."""

    name: str
    ok: bool
    required: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        tag = "ok  " if self.ok else ("FAIL" if self.required else "warn")
        text = f"{tag}  {self.name:<16} {self.detail}"
        if not self.ok and self.fix:
            text += f"  -> fix: {self.fix}"
        return text


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def _err(res: subprocess.CompletedProcess[str]) -> str:
    return (
        (res.stderr or res.stdout).strip().splitlines()[-1]
        if (res.stderr or res.stdout).strip()
        else f"exit {res.returncode}"
    )


def _root() -> Check:
    ok = os.geteuid() == 0
    return Check(
        "root",
        ok,
        True,
        "running as root" if ok else f"uid {os.geteuid()}",
        "sudo .venv/bin/python -m emulator.doctor",
    )


def _tools() -> list[Check]:
    out = []
    for tool, pkg, req in [
        ("ip", "iproute2", True),
        ("tc", "iproute2", True),
        ("mnexec", "mininet", True),
        ("brctl", "bridge-utils", True),
        ("ifconfig", "net-tools", True),
        ("ethtool", "ethtool", True),
        ("ping", "iputils-ping", True),
        ("iperf3", "iperf3", False),
    ]:
        path = shutil.which(tool)
        out.append(
            Check(
                f"tool {tool}",
                path is not None,
                req,
                path or "not found",
                f"apt-get install -y {pkg}",
            )
        )
    return out


def _python_modules() -> list[Check]:
    out = []
    for mod in ("mininet", "pyroute2", "traces"):
        try:
            m = __import__(mod)
            out.append(Check(f"python {mod}", True, True, getattr(m, "__file__", "") or "ok"))
        except ImportError as exc:
            out.append(Check(f"python {mod}", False, True, str(exc), "bash scripts/setup.sh"))
    return out


def _probe(
    name: str,
    setup: list[list[str]],
    teardown: list[list[str]],
    fix: str,
    required: bool = True,
    ok_detail: str = "works",
) -> Check:
    try:
        for argv in setup:
            res = _run(argv)
            if res.returncode != 0:
                return Check(name, False, required, f"`{' '.join(argv)}`: {_err(res)}", fix)
        return Check(name, True, required, ok_detail)
    finally:
        for argv in teardown:
            _run(argv)


def _kernel() -> list[Check]:
    a, b, br, ifb = f"{_TMP}a", f"{_TMP}b", f"{_TMP}r", f"{_TMP}i"
    ns = _probe("namespaces", [["mnexec", "-n", "true"]], [], "")
    if not ns.ok:
        ns.fix = start_hint(ns.detail)  # the cause mnexec's message points at
    checks = [
        ns,
        _probe(
            "veth",
            [["ip", "link", "add", a, "type", "veth", "peer", "name", b]],
            [["ip", "link", "del", a]],
            "modprobe veth",
        ),
        _probe(
            "bridge",
            [["ip", "link", "add", br, "type", "bridge"]],
            [["ip", "link", "del", br]],
            "modprobe bridge; apt-get install -y bridge-utils",
        ),
        _probe(
            "ifb",
            [["ip", "link", "add", ifb, "type", "ifb"]],
            [["ip", "link", "del", ifb]],
            "modprobe ifb",
        ),
    ]
    setup = [["ip", "link", "add", ifb, "type", "ifb"], ["ip", "link", "set", ifb, "up"]]
    down = [["ip", "link", "del", ifb]]
    checks.append(
        _probe(
            "htb",
            [
                *setup,
                ["tc", "qdisc", "add", "dev", ifb, "root", "handle", "1:", "htb", "default", "fff"],
                [
                    "tc",
                    "class",
                    "add",
                    "dev",
                    ifb,
                    "parent",
                    "1:",
                    "classid",
                    "1:10",
                    "htb",
                    "rate",
                    "10mbit",
                    "quantum",
                    "1514",
                ],
                [
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    ifb,
                    "parent",
                    "1:10",
                    "handle",
                    "10:",
                    "bfifo",
                    "limit",
                    "150000",
                ],
                [
                    "tc",
                    "filter",
                    "add",
                    "dev",
                    ifb,
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    "src",
                    "10.0.0.1/32",
                    "flowid",
                    "1:10",
                ],
            ],
            down,
            "modprobe sch_htb sch_fifo cls_u32 (kernel modules for HTB, bfifo, u32)",
            ok_detail="HTB + bfifo + u32 work",
        )
    )
    checks.append(
        _probe(
            "ingress+mirred",
            [
                *setup,
                ["ip", "link", "add", a, "type", "veth", "peer", "name", b],
                ["tc", "qdisc", "add", "dev", a, "handle", "ffff:", "ingress"],
                [
                    "tc",
                    "filter",
                    "add",
                    "dev",
                    a,
                    "parent",
                    "ffff:",
                    "protocol",
                    "all",
                    "u32",
                    "match",
                    "u32",
                    "0",
                    "0",
                    "action",
                    "mirred",
                    "egress",
                    "redirect",
                    "dev",
                    ifb,
                ],
            ],
            [["ip", "link", "del", a], *down],
            "modprobe sch_ingress act_mirred",
        )
    )
    netem = _probe(
        "netem",
        [*setup, ["tc", "qdisc", "add", "dev", ifb, "root", "netem", "delay", "1ms"]],
        down,
        "optional: modprobe sch_netem (apt-get install linux-modules-extra-$(uname -r))",
        required=False,
        ok_detail="available: delay uses netem",
    )
    if not netem.ok:
        netem.detail = "absent: delay will use the userspace TUN relay"
    checks.append(netem)
    checks.append(_tun(required=not netem.ok))
    return checks


def _tun(required: bool) -> Check:
    fix = "modprobe tun (and mknod /dev/net/tun c 10 200)"
    if not Path("/dev/net/tun").exists():
        return Check("tun", False, required, "/dev/net/tun missing", fix)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tunrelay import open_tap; "
        f"open_tap('{_TMP}t')"
    )
    res = _run([sys.executable, "-I", "-c", code, str(Path(__file__).parent / "net")])
    if res.returncode != 0:
        return Check("tun", False, required, _err(res), fix)
    return Check("tun", True, required, "TAP devices can be created (delay relay)")


def _sudo() -> list[Check]:
    sudo = shutil.which("sudo")
    out = [
        Check("sudo", sudo is not None, False, sudo or "not installed", "apt-get install -y sudo")
    ]
    venv_py = Path(sys.prefix) / "bin" / "python"
    if sudo is not None:
        res = _run(
            [sudo, "-n", str(venv_py), "-c", "import emulator.net, traces"],
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        out.append(
            Check(
                "sudo python",
                res.returncode == 0,
                False,
                f"sudo {venv_py} imports the project" if res.returncode == 0 else _err(res),
                "bash scripts/setup.sh; run as: sudo .venv/bin/python -m ... "
                "(plain `sudo python` uses secure_path's interpreter)",
            )
        )
    return out


def _leftovers() -> Check:
    dead = []
    for rid in list_runs():
        try:
            if not RunState.load(rid).owner_alive():
                dead.append(rid)
        except NetError:
            dead.append(rid)
    return Check(
        "leftover runs",
        not dead,
        False,
        f"none in {STATE_DIR}" if not dead else f"dead runs: {', '.join(dead)}",
        "python -m emulator.doctor --cleanup-all",
    )


def _info() -> list[Check]:
    out = []
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        out.append(Check("sched_fifo", True, False, "shaper and relay can run real-time"))
    except OSError as exc:
        out.append(
            Check(
                "sched_fifo",
                False,
                False,
                f"not allowed ({exc.strerror}): shaper lag may grow under load",
                "run as root outside a restricted container",
            )
        )
    out.append(
        Check(
            "cpus",
            (os.cpu_count() or 1) >= 2,
            False,
            f"{os.cpu_count()} CPU(s); links above ~200 Mbit/s may be CPU-bound",
            "use fewer/slower links, or a machine with more cores",
        )
    )
    bps, src = shaping_limit()
    out.append(Check("shaping limit", True, False,
                     f"{bps / 1e6:g} Mbit/s, {src}; traces above it run in high-rate mode"))
    return out


def run_checks() -> list[Check]:
    """All preflight checks (kernel probes are skipped when not root)."""
    checks = [_root(), *_tools(), *_python_modules()]
    if checks[0].ok:
        checks += _kernel()
    checks += [*_sudo(), _leftovers(), *_info()]
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m emulator.doctor",
        description="Check that this machine can run the emulated network (root, namespaces, "
        "veth, bridge, HTB, IFB, netem or TUN, Mininet, sudo), or clean up after a killed run.",
    )
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--cleanup",
        metavar="RUN_ID",
        help="remove exactly what run RUN_ID created (from its state file)",
    )
    g.add_argument(
        "--cleanup-all",
        action="store_true",
        help="clean up every recorded run whose owner process is dead",
    )
    g.add_argument("--list", action="store_true", help="list recorded runs and their owners")
    g.add_argument("--measure-rate", action="store_true",
                   help="measure the highest rate this machine shapes faithfully (root, ~1 "
                        "min) and store it for emulator.run's high-rate mode")
    ap.add_argument(
        "--force",
        action="store_true",
        help="with --cleanup: even if the owner process is still alive",
    )
    args = ap.parse_args(argv)
    try:
        if args.cleanup:
            for act in cleanup_run(args.cleanup, force=args.force):
                print(f"doctor: {act}")
            return 0
        if args.cleanup_all:
            done = cleanup_all()
            for rid, acts in done.items():
                for act in acts:
                    print(f"doctor: [{rid}] {act}")
            print(f"doctor: cleaned {len(done)} run(s)")
            return 0
        if args.measure_rate:
            rec = measure_shaping_limit()
            print(f"doctor: shaping limit {rec['limit_mbps']:g} Mbit/s, stored in "
                  f"{shaping_file()}")
            return 0
        if args.list:
            for rid in list_runs():
                st = RunState.load(rid)
                alive = "alive" if st.owner_alive() else "dead"
                print(
                    f"{rid}  owner pid {st.owner_pid} ({alive})  links {len(st.links)}  "
                    f"processes {len(st.procs)}"
                )
            return 0
    except NetError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    checks = run_checks()
    for c in checks:
        print(c.line())
    failed = [c for c in checks if c.required and not c.ok]
    print(f"doctor: {'FAILED: ' + ', '.join(c.name for c in failed) if failed else 'ready'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
