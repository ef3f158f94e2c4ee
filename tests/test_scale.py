"""Scale (issue 13): a request in flight when a run stops is recorded as unfinished, not lost;
high-rate mode scales payloads and the link together and says so in every output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.synthetic import write_synthetic_pair

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_pair(tmp_path_factory.mktemp("profiles"))


def test_requests_in_flight_at_the_end_are_recorded_as_unfinished(
        tmp_path: Path, toy: tuple[Path, Path]) -> None:
    dev, mec = toy
    out = tmp_path / "run"
    # closed loop, each request far longer than the run: every device is stopped mid-request
    res = _run(["--model", str(dev), "--mec-profile", str(mec), "--policy", "offload",
                "--network", "loopback", "--devices", "3", "--duration", "0.5", "--grace", "0",
                "--closed-loop", "--repeat", "decode=3000", "--mec-speedup", "1", "--out", str(out), "--quiet"])
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 0
    assert summary["unfinished"] == 3 and summary["lost"] == 0
    got = sorted((u["device"], u["request"]) for u in summary["unfinished_requests"])
    assert got == [(0, 1), (1, 1), (2, 1)]
    for u in summary["unfinished_requests"]:
        assert isinstance(u["split"], int) and u["t_stopped"] >= u["t_start"] >= u["t_arrival"]
    assert "(3 unfinished when the run stopped)" in res.stderr.splitlines()[-1]


def test_high_rate_mode_sends_a_scaled_payload_and_nothing_else_changes() -> None:
    import math
    import socket

    from emulator.protocol import Message, MsgType, recv_message
    from emulator.transport import Sender, wire_payload

    a, b = socket.socketpair()
    try:
        s = Sender(a, payload_scale=0.01)
        sizes = [1, 99, 100, 12_345, 1_000_000]
        zeros = bytearray(max(sizes))
        for n in sizes:
            s.send(Message(MsgType.DATA, 7, meta={"items": [1]},
                           payload=memoryview(zeros)[:n]))
        s.send(Message(MsgType.ECHO, payload=memoryview(zeros)[:32_768]))
        real = b"x" * 5000  # execute mode's tensors and a REPORT are never cut
        s.send(Message(MsgType.DATA, 8, meta={"tensors": []}, payload=real))
        s.send(Message(MsgType.REPORT, 8, payload=real))
        got = [recv_message(b) for _ in range(len(sizes) + 3)]
        assert [m.payload_size for m in got if m is not None] == [
            *(max(1, math.ceil(n / 100)) for n in sizes), 328, 5000, 5000]
        assert got[0] is not None and got[0].meta == {"items": [1]}
        assert got[-1] is not None and bytes(got[-1].payload) == real
        s.close()
    finally:
        a.close()
        b.close()
    m = Message(MsgType.DATA, payload=b"\0" * 10)
    assert wire_payload(m, 1.0) is m


def test_high_rate_mode_is_chosen_from_the_measured_limit(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from emulator.doctor import DEFAULT_SHAPING_LIMIT_BPS, shaping_limit
    from emulator.errors import EmulatorError
    from emulator.run import high_rate
    from traces.synth import constant

    limit_file = tmp_path / "shaping.json"
    monkeypatch.setenv("AIGC_EMU_SHAPING_FILE", str(limit_file))
    assert DEFAULT_SHAPING_LIMIT_BPS == 300e6
    t10g = constant(30, 10_000)
    r = high_rate(t10g, "auto", "profiled", "mininet")  # no measurement: the default
    assert r["active"] and r["payload_scale"] == pytest.approx(1 / 34)  # ceil(10000 / 300)
    assert r["limit_source"].startswith("default")
    limit_file.write_text(json.dumps({"limit_mbps": 1000, "measured_unix": 0}))
    r = high_rate(t10g, "auto", "profiled", "mininet")
    assert r["payload_scale"] == pytest.approx(0.1)
    assert r["shaped_peak_mbps"] == pytest.approx(1000)
    assert r["limit_source"].startswith("measured")
    limit_file.write_text("{not json")
    bps, src = shaping_limit()
    assert bps == DEFAULT_SHAPING_LIMIT_BPS and "unreadable" in src
    limit_file.write_text(json.dumps({"limit_mbps": 1000, "measured_unix": 0}))
    r = high_rate(constant(30, 999), "auto", "profiled", "mininet")
    assert not r["active"] and r["payload_scale"] == 1
    assert high_rate(t10g, "0.5", "profiled", "mininet")["payload_scale"] == 0.5
    assert high_rate(t10g, "auto", "profiled", "loopback")["payload_scale"] == 1
    for spec, compute, match in [("0", "profiled", "--payload-scale must be auto or a number"),
                                 ("big", "profiled", "--payload-scale must be auto or a number"),
                                 ("auto", "execute", "cannot carry execute mode")]:
        with pytest.raises(EmulatorError, match=match):
            high_rate(t10g, spec, compute, "mininet")


@pytest.mark.parametrize("mod", ["emulator.run", "emulator.sweep", "agent.sweep"])
def test_a_bad_scenario_file_is_one_line_naming_key_and_line(tmp_path: Path, mod: str) -> None:
    for text, msg in [("[mec]\nslot = 2\n", ":2: unknown key mec.slot (expected one of "
                                            "speedup, slots, model, max_batch, memory_gb, "
                                            "batch_curve; did you mean 'slots'?)"),
                      ('name = "x"\n[devices]\ncount = "many"\n',
                       ":3: devices.count must be an integer, got str 'many'")]:
        p = tmp_path / "bad.toml"
        p.write_text(text)
        r = subprocess.run([sys.executable, "-m", mod, "--scenario", str(p), "--out",
                            str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith(f"{p}{msg}"), r.stderr
        assert not (tmp_path / "out").exists()


def test_an_emulator_sweep_with_a_ray_address_that_does_not_answer_is_one_line(
        tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "emulator.sweep", "--scenarios",
                        str(ROOT / "scenarios" / "lte-8.toml"), "--out", str(tmp_path / "sw"),
                        "--address", "127.0.0.1:1"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emulator.sweep: error: no Ray cluster answers "
                                               "at 127.0.0.1:1"), r.stderr
    assert not (tmp_path / "sw").exists()


def test_the_shared_cell_replay_divides_the_cell_among_active_devices() -> None:
    import numpy as np

    from emulator.parity import _shared_share
    from traces.synth import constant

    cell = constant(100.0, 8.0)  # 8 Mbit/s
    # device 1 transfers over [1, 2), device 2 over [1.5, 3), device 0 over [1.2, 1.4)
    busy = (np.array([1, 2, 0]), np.array([1.0, 1.5, 1.2]), np.array([2.0, 3.0, 1.4]))
    share = _shared_share(cell, busy, 0, 0.5, 4.0)
    expect = {(0.5, 1.0): 8, (1.0, 1.5): 4, (1.5, 2.0): 8 / 3, (2.0, 3.0): 4, (3.0, 4.0): 8,
              (4.0, 9.0): 8}  # after the window: the whole cell
    for (a, b), mbps in expect.items():
        assert share.bytes_between(a, b) * 8 / (b - a) == pytest.approx(mbps * 1e6), (a, b)
    # device 1 does not count itself: alone over [1, 1.2) and [1.4, 1.5), with device 0
    # between, then with device 2
    own = _shared_share(cell, busy, 1, 1.0, 2.0)
    assert own.bytes_between(1.0, 1.2) * 40 == pytest.approx(8e6)
    assert own.bytes_between(1.2, 1.4) * 40 == pytest.approx(4e6)
    assert own.bytes_between(1.5, 2.0) * 16 == pytest.approx(4e6)



def test_a_probe_counts_as_a_transfer_only_while_on_the_link() -> None:
    """A record's probe occupies the uplink from its first byte written to the MEC's receipt
    less the delay (``probe.on_link``); the empty echo, the reply and the decision around it
    do not. A record without ``on_link`` (older runs) keeps ``t_decide`` .. ``t_start``."""
    from emulator.parity import _transfers

    send = {"kind": "send", "side": "up", "nbytes": 1024, "t_start": 2.0, "t_end": 2.05}
    new = {"device": 3, "t_decide": 1.0, "t_start": 2.0, "steps": [send],
           "probe": {"bytes": 32768, "s": 0.9, "on_link": [[1.1, 1.6]]}}
    old = {"device": 4, "t_decide": 1.0, "t_start": 2.0, "steps": [],
           "probe": {"bytes": 32768, "s": 0.9}}
    dev, t0, t1 = _transfers([new, old], "up", 0.01)
    got = sorted(zip(dev.tolist(), t0.tolist(), t1.tolist(), strict=True))
    assert got == [(3, 1.1, pytest.approx(1.59)), (3, 2.0, pytest.approx(2.04)),
                   (4, 1.0, pytest.approx(2.0))]
    # the downlink sees neither probe
    assert _transfers([new, old], "down", 0.01)[0].size == 0


def test_the_device_records_when_its_probe_was_on_the_link() -> None:
    from emulator.observe import LinkEstimator

    est = LinkEstimator()
    est.charge_probe(4096, 0.05, (1.0, 1.03))
    est.charge_probe(4096, 0.04, (1.2, 1.22))
    assert est.take_probe() == {"bytes": 8192, "s": pytest.approx(0.09),
                                "on_link": [[1.0, 1.03], [1.2, 1.22]]}
    assert est.take_probe() == {"bytes": 0, "s": 0.0}

@pytest.mark.root
@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="needs root (namespaces and tc)")
def test_a_run_in_high_rate_mode_says_so_and_keeps_real_units(tmp_path: Path,
                                                               toy: tuple[Path, Path]) -> None:
    dev, mec = toy
    trace = tmp_path / "const.csv"
    trace.write_text("time_s,mbps\n0,100\n60,100\n")
    out = tmp_path / "run"
    res = _run(["--model", str(dev), "--mec-profile", str(mec), "--policy", "fixed:2",
                "--trace", str(trace), "--devices", "1", "--duration", "2", "--rate", "2",
                "--payload-scale", "0.1", "--out", str(out), "--quiet"], timeout=180)
    assert res.returncode == 0, res.stderr
    assert "high-rate mode: payloads and link x0.1 (--payload-scale given" in res.stderr
    assert "high-rate mode x0.1" in res.stderr.splitlines()[-1]
    s = json.loads((out / "summary.json").read_text())
    assert s["high_rate"]["payload_scale"] == 0.1 and s["high_rate"]["active"]
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert recs and all(r["phases"]["upload_bytes"] == 200_000 + 4 * 3_072 for r in recs)
    import csv

    caps = {float(r["capacity_mbps"]) for r in csv.DictReader((out / "link.csv").open())}
    assert caps == {100.0}  # the trace's rate, not the shaped 10 Mbit/s


def test_tcp_counters_count_the_pure_acks_a_receiver_sends() -> None:
    """A receiver of 20 small messages sends data on nothing but ACKs them: its socket's
    counters (``TCP_INFO``) show segments out with no data segment; the sender's show 20 data
    segments of the bytes written."""
    import socket
    import time

    from emulator.tcpinfo import sent

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    rx = socket.create_connection(srv.getsockname())
    tx, _ = srv.accept()
    try:
        tx.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r0, t0 = sent(rx), sent(tx)
        if r0 is None or t0 is None:
            pytest.skip("this kernel gives no TCP_INFO counters")
        got = 0
        for _ in range(20):
            tx.sendall(b"x" * 100)
            while got < 100 * (_ + 1):
                got += len(rx.recv(4096))
            time.sleep(0.002)
        time.sleep(0.1)
        r1, t1 = sent(rx), sent(tx)
        assert r1 is not None and t1 is not None
        rd, td = r1.since(r0), t1.since(t0)
        assert td["data_segments"] == 20 and td["payload_bytes"] == 2000
        assert rd["data_segments"] == 0 and rd["payload_bytes"] == 0
        assert 1 <= rd["segments"] <= 20  # one ACK per segment at most (delayed ACKs fewer)
    finally:
        for s in (rx, tx, srv):
            s.close()


def test_unpriced_traffic_is_what_a_socket_sent_beyond_the_priced_messages() -> None:
    from agent.wire import HEADER_BYTES, PAYLOAD_FRACTION, data_meta, message_wire_bytes
    from emulator.parity import averaged, less_unpriced, unpriced
    from traces.synth import constant

    data = message_wire_bytes(1024, HEADER_BYTES + len(data_meta(10, [10])))
    probe = message_wire_bytes(4096, HEADER_BYTES)
    # the device's socket: the DATA, the probe, ten pure ACKs (66 B each, no data) and two
    # control messages of 150 payload bytes each (one segment each)
    control = 2 * (150 + 66)
    rec = {"t_decide": 1.0, "t_start": 1.5, "t_end": 3.0,
           "steps": [{"kind": "send", "side": "up", "nbytes": 1024, "t_end": 1.6},
                     {"kind": "send", "side": "down", "nbytes": 8, "t_end": 2.0},
                     {"kind": "send", "side": "down", "nbytes": 8, "t_end": 2.9}],
           "probe": {"bytes": 4096, "on_link": [[1.0, 1.1]]},
           "uplink_tcp": {"segments": 1 + 3 + 10 + 2, "data_segments": 1 + 3 + 2,
                          "payload_bytes": data + probe - 4 * 66 + 300}}
    assert 66 * 16 + rec["uplink_tcp"]["payload_bytes"] == data + probe + 10 * 66 + control
    spans = unpriced([rec, {"t_decide": 0.0, "t_start": 0.5, "t_end": 1.0, "steps": []}], "up")
    # the ACKs while the tokens arrived, the control messages from the decision to the start
    assert spans == [(2.0, 2.9, pytest.approx(660 * PAYLOAD_FRACTION)),
                     (1.0, 1.5, pytest.approx(control * PAYLOAD_FRACTION))]
    # down: the MEC's counters less its priced DATA (two 8-byte tokens): two pure ACKs while
    # the probe and the upload arrived, 500 wire bytes of control over the whole request
    token = message_wire_bytes(8, HEADER_BYTES + len(data_meta(10, [10])))
    rec["downlink_tcp"] = {"segments": 2 + 2 + 2, "data_segments": 2 + 2,
                           "payload_bytes": 2 * token + 132 + 500 - 6 * 66}
    assert unpriced([rec], "down") == [(1.1, 1.6, pytest.approx(132 * PAYLOAD_FRACTION)),
                                       (1.0, 3.0, pytest.approx(500 * PAYLOAD_FRACTION))]
    cell = constant(10.0, 1.0)  # 1 Mbit/s, one segment
    grid = averaged(cell, 0.5)
    left = less_unpriced(grid, [(1.0, 3.0, 50_000.0)])  # 200 kbit/s over [1, 3)
    for a, b, mbps in ((0.0, 1.0, 1.0), (1.0, 3.0, 0.8), (3.0, 10.0, 1.0)):
        assert left.bytes_between(a, b) * 8 / (b - a) == pytest.approx(mbps * 1e6), (a, b)
    # a saturated bin keeps a floor of its capacity (queueing, not an outage)
    assert less_unpriced(grid, [(0.0, 0.5, 1e6)]).rates_bps[0] == pytest.approx(0.05e6)
