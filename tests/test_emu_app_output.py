"""``--out`` that cannot take the run: checked before anything starts (read-only, full), and a
disk that fills during the run ends it with one line, exit 2, whole records only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.synthetic import write_synthetic_pair

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                reason="needs root to mount a small tmpfs")


def test_records_are_whole_or_absent_when_the_file_cannot_grow(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes write() fail part-way (EFBIG) like a full disk, without root
    code = f"""
import resource, signal, json
from pathlib import Path
from emulator.records import RecordSink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
sink = RecordSink(Path({str(tmp_path / 'requests.jsonl')!r}))
for i in range(20):
    sink.add({{"request": i, "pad": "x" * 1500, "latency_s": 1.0}})
sink.close()
print(json.dumps({{"kept": len(sink.records), "dropped": sink.dropped, "error": sink.error}}))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    text = (tmp_path / "requests.jsonl").read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == out["kept"] == 6  # 6 x 1.55 KB < 10 KB
    assert [json.loads(ln)["request"] for ln in lines] == list(range(6))
    assert out["dropped"] == 14
    assert "cannot write" in out["error"] and "requests.jsonl" in out["error"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def _mount(mnt: Path, opts: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=True)


def _run(tmp_path: Path, out: Path, duration: str = "2") -> subprocess.CompletedProcess[str]:
    dev, mec = write_synthetic_pair(tmp_path)
    cmd = [sys.executable, "-m", "emulator.run", "--model", str(dev), "--mec-profile", str(mec),
           "--policy", "fixed:2", "--network", "loopback", "--devices", "2", "--closed-loop",
           "--duration", duration, "--quiet", "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in res.stderr, res.stderr
    return [ln for ln in res.stderr.splitlines()
            if ln.startswith("emulator: ") and "->" not in ln and "warning:" not in ln]


def _no_process_mentions(path: Path) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(path).encode() in (d / "cmdline").read_bytes():
                    return False
            except OSError:
                continue
    return True


@needs_root
def test_read_only_out_is_one_line_before_anything_starts(tmp_path: Path, tmpfs: Path) -> None:
    _mount(tmpfs, "size=4m,ro")
    res = _run(tmp_path, tmpfs / "run")
    errors = _error_lines(res)
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert f"--out {tmpfs / 'run'}: cannot write there: Read-only file system" in errors[0]
    assert list(tmpfs.iterdir()) == []


@needs_root
def test_full_out_is_one_line_and_leaves_nothing(tmp_path: Path, tmpfs: Path) -> None:
    _mount(tmpfs, "size=256k")
    with (tmpfs / "filler").open("wb", buffering=0) as f:  # fill it up
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    res = _run(tmp_path, tmpfs / "a" / "run")
    errors = _error_lines(res)
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert str(tmpfs / "a" / "run") in errors[0]
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler"]  # no directory left behind


@needs_root
def test_disk_filling_during_the_run(tmp_path: Path, tmpfs: Path) -> None:
    _mount(tmpfs, "size=1400k")  # passes the 1 MiB check, fills within seconds
    out = tmpfs / "run"
    res = _run(tmp_path, out, duration="60")
    errors = _error_lines(res)
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert "No space left on device" in errors[0] and str(out) in errors[0], errors[0]
    text = (out / "requests.jsonl").read_text()
    assert text == "" or text.endswith("\n")  # never a torn last line
    recs = [json.loads(ln) for ln in text.splitlines()]
    assert len(recs) > 10
    assert "records kept" in errors[0] or "record(s) kept" in errors[0]
    assert "summary.json written" in errors[0]  # into the space reserved at the start
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["requests"] == len(recs)
    assert "No space left" in summary["output_error"]
    assert not list(out.glob(".*"))  # no temporary or reserve file left
    assert _no_process_mentions(out)
