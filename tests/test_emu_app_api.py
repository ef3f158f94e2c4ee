"""The emulator's application modules: deliberate public API (``__all__``), one error class."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["compute", "device", "errors", "execute", "loopback", "mec", "observe", "plots",
           "policies", "protocol", "provenance", "records", "run", "session", "synthetic"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_deliberate(name: str) -> None:
    mod = importlib.import_module(f"emulator.{name}")
    assert mod.__doc__ and mod.__doc__.strip()
    names = mod.__all__
    assert names == sorted(names, key=lambda s: (not s.isupper(), s)) or names == sorted(names)
    for n in names:
        assert hasattr(mod, n), f"emulator.{name}.__all__ names missing {n!r}"


def test_errors_are_one_tree() -> None:
    from emulator.errors import EmulatorError, ProtocolError

    assert issubclass(ProtocolError, EmulatorError)
    assert EmulatorError("x", 2).exit_code == 2 and EmulatorError("x").exit_code == 1
