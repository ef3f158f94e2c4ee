"""Starting things, bounded: a helper process's first line (its "I am ready") within a
deadline, and the likely cause of a host or ``mnexec`` that failed to start (used by
:mod:`emulator.net.host` and the doctor)."""

from __future__ import annotations

import select
import subprocess
import time

from emulator.net.errors import NetError

__all__ = ["start_hint", "wait_line"]


def start_hint(output: str) -> str:
    """The likely cause and fix for a host or ``mnexec`` that failed with ``output``."""
    low = output.lower()
    if "remount" in low or "mount" in low:
        return ("mnexec could not make / private in the host's mount namespace: / is not a "
                "mount point here (a chroot?); run on the machine itself or bind-mount the "
                "root onto itself first (mount --bind DIR DIR before chroot DIR)")
    if "operation not permitted" in low or "permission denied" in low:
        return ("not allowed to create namespaces: run as root outside a restricted "
                "container (or give it CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    if "unshare" in low or "invalid argument" in low:
        return "the kernel refused a new network namespace: a kernel with CONFIG_NET_NS"
    if "no such file" in low or "not found" in low:
        return "mnexec or bash is missing: bash scripts/setup.sh (apt-get install -y mininet)"
    return "check the machine with: sudo .venv/bin/python -m emulator.doctor"


def wait_line(proc: subprocess.Popen[str], expect: str, timeout_s: float, what: str) -> None:
    """Wait for ``proc`` to print the line ``expect`` on its stdout (a pipe, text mode).

    :raises NetError: ``proc`` exited, printed something else, or said nothing for
        ``timeout_s``; the message names ``what`` and what it printed.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NetError(f"{what} did not start within {timeout_s:g} s (pid {proc.pid})")
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if ready:
            raw = proc.stdout.readline()
            line = raw.strip()
            if line == expect:
                return
            if not raw:  # end of file: it exited (or closed stdout)
                try:
                    rc = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    raise NetError(f"{what} closed its output before it was ready "
                                   f"(pid {proc.pid})") from None
                raise NetError(f"{what} exited with code {rc} before it was ready")
            code = proc.poll()
            state = f"exit {code}" if code is not None else "still running"
            raise NetError(f"{what} failed to start ({state}): printed {line[:200]!r}, "
                           f"expected {expect!r}")
        if proc.poll() is not None:
            raise NetError(f"{what} exited with code {proc.returncode} before it was ready")
