#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine (run as root):
#   apt packages: python3-venv (Debian's python3 has no ensurepip without it) and the emulator's
#   tools (mininet, bridge-utils, iputils-ping, ethtool, iperf3, iproute2, sudo, procps);
#   a virtual environment in .venv with the project and its Python dependencies.
# A .venv that an earlier, failed run left without a working python or pip is deleted and made
# again. Every step it takes is printed as one "setup: ..." line.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
command -v "$PY" >/dev/null || { echo "setup: no python3 on PATH; install Debian's python3 first" >&2; exit 1; }

APT_PKGS=(python3-venv mininet bridge-utils iputils-ping ethtool iperf3 iproute2 sudo procps)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: apt packages missing (${missing[*]}); run this script as root" >&2; exit 1
  fi
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: apt packages present (${APT_PKGS[*]})"
fi
# python3-venv is the package for the default python3; a PYTHON of another version needs its own
if ! "$PY" -c 'import ensurepip' 2>/dev/null; then
  echo "setup: $PY has no ensurepip; install python$("$PY" -c 'import sys;print("%d.%d"%sys.version_info[:2])')-venv" >&2
  exit 1
fi

# A .venv is usable when its python runs and has pip. One that is not (an earlier run failed
# half-way, e.g. before python3-venv was installed) is made again; a symlinked .venv belongs to
# another checkout and is never deleted from here.
venv_ok() { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }
if [ -e .venv ] || [ -L .venv ]; then
  if venv_ok; then
    echo "setup: .venv present ($(.venv/bin/python --version))"
  elif [ -L .venv ]; then
    echo "setup: .venv is a symlink to $(readlink .venv) without a working python and pip; fix or remove it" >&2
    exit 1
  else
    echo "setup: .venv is broken (no working python or pip, left by an earlier failed run); recreating it"
    rm -rf .venv
  fi
fi
if [ ! -e .venv ]; then
  echo "setup: creating .venv with $($PY --version)"
  if ! "$PY" -m venv .venv; then
    rm -rf .venv
    echo "setup: '$PY -m venv .venv' failed; see the message above" >&2
    exit 1
  fi
fi
# torch first, pinned to the CPU wheel: a looser spec pulls a multi-GB CUDA build.
echo "setup: pip install torch==2.13.0 and the project$([ "$DEV" = 1 ] && echo ' with [dev]') into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "$DEV" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "setup: ok ($(.venv/bin/python --version), venv .venv)"
