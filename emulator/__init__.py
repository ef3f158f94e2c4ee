"""The real-time emulator: Mininet hosts, trace-shaped links, device and MEC processes.

``python -m emulator.run --help`` runs an emulation; see :mod:`emulator.run`.
"""
