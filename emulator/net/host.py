"""Bounded starts: a Mininet host shell or a helper process that does not come up is an error
within seconds, never a silent hang.

Mininet's ``Node.startShell`` reads the new shell's pty until the prompt appears, with no
deadline; when ``mnexec`` fails (in a chroot it cannot make ``/`` private: ``remount: Invalid
argument``) the shell never prompts and the read blocks forever, because Mininet keeps the pty's
other end open. :class:`BoundedHost` is Mininet's ``Host`` with that first read bounded by
:data:`HOST_START_TIMEOUT_S` and ended early when the shell exits; the error names the host, what
``mnexec`` printed, and the likely cause (:func:`emulator.net.start.start_hint`). :func:`emulator.net.start.wait_line` does
the same for a helper process that announces itself with one line on stdout.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from typing import Any

from mininet.node import Host

from emulator.net.errors import NetError
from emulator.net.start import start_hint

__all__ = ["HOST_START_TIMEOUT_S", "BoundedHost"]

HOST_START_TIMEOUT_S = 10.0
"""How long one Mininet host shell may take to print its first prompt (normally < 1 s)."""

_PROMPT = chr(127)  # Mininet's PS1


class BoundedHost(Host):  # type: ignore[misc]
    """Mininet's ``Host`` whose shell must prompt within :data:`HOST_START_TIMEOUT_S`.

    On failure the shell process is killed and its pty closed before :class:`NetError` is
    raised, so nothing of the host is left behind.
    """

    start_timeout_s: float = HOST_START_TIMEOUT_S

    def startShell(self, mnopts: Any = None) -> None:
        self._start_deadline: float | None = time.monotonic() + self.start_timeout_s
        self._start_out = ""
        try:
            super().startShell(mnopts)
        except BaseException:  # NetError, or Ctrl-C while waiting
            self._discard_shell()
            raise
        finally:
            self._start_deadline = None

    def read(self, size: int = 1024) -> str:
        deadline = getattr(self, "_start_deadline", None)
        if deadline is None:
            return str(super().read(size))
        node: Any = self
        fd = node.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NetError(self._failure(f"did not start within {self.start_timeout_s:g} s"))
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready:
                self._start_out += str(super().read(size))
                if self._start_out.endswith(_PROMPT):
                    self._start_deadline = None
                    out, self._start_out = self._start_out, ""
                    return out
            elif (code := self._shell().poll()) is not None:
                raise NetError(self._failure(f"exited with code {code}"))

    def _failure(self, what: str) -> str:
        said = " | ".join(ln.strip() for ln in self._start_out.splitlines() if ln.strip())
        said = said.replace(_PROMPT, "")[-300:]
        told = f"said: {said}" if said else "printed nothing"
        return f"Mininet host {self.name} {what} (mnexec {told}); {start_hint(said)}"

    def _shell(self) -> Any:
        shell: Any = self.shell
        return shell

    def _discard_shell(self) -> None:
        shell = self._shell()
        if shell is not None and shell.poll() is None:
            shell.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                shell.wait(timeout=2.0)
        # the pty's master end is owned by the file object Mininet wrapped it in: close it
        # through that object, once (a bare os.close would let the object close the number
        # again later, by then perhaps another file's); the slave end is a bare fd
        node: Any = self  # Mininet's attributes, untyped
        if node.stdin is not None:  # and drop Mininet's fd -> node maps of this pty
            with contextlib.suppress(OSError, ValueError):
                fd = node.stdin.fileno()
                if Host.outToNode.get(fd) is self:
                    del Host.outToNode[fd]
                if Host.inToNode.get(fd) is self:
                    del Host.inToNode[fd]
        if node.stdin is not None:
            with contextlib.suppress(OSError):
                node.stdin.close()
        elif node.master is not None:
            with contextlib.suppress(OSError):
                os.close(node.master)
        if node.slave is not None:
            with contextlib.suppress(OSError):
                os.close(node.slave)
        node.stdin = node.stdout = node.master = node.slave = None
        self.shell = None
