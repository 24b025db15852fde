"""`mstore drill` against a running pair (docs/replication.md, "Drill"):
probes to the primary, the link isolated while probes go on, the
primary killed, the DR site promoted, RTO measured, every acknowledged
probe looked for, failback.  Sync mode: nothing acknowledged during the
isolation, nothing missing at the promote (RPO 0 without failback).
Async mode: the probes acknowledged during the isolation are missing at
the promote and come back by re-delivery (RPO 0 after failback); the
rewound primary then follows the DR site byte for byte."""
import subprocess
import time

import pytest

from conftest import prog, run
from replica_pair import Pair
from test_replica_failback import reverse_confs


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_drill(tmp_path, mode):
    extra = ("replication = sync\nsync_timeout = 3s\n" if mode == "sync"
             else "")
    pair = Pair(tmp_path, extra_store=extra, seg="1M")
    try:
        pair.start("mstored")
        pair.start("recv")
        pair.start("send")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pair.wait_caught_up()
        pair.start("standby")
        pids = {}
        for name in ("mstored", "send", "recv"):
            pids[name] = tmp_path / f"{name}.pid"
            pids[name].write_text(f"{pair.procs[name].pid}\n")
        t0 = time.time()
        r = pair.mstore("drill", "--primary", pair.pri / "mstore.conf",
                        "--dr", pair.dr / "mstore.conf",
                        "--primary-pid", pids["mstored"],
                        "--send-pid", pids["send"],
                        "--recv-pid", pids["recv"],
                        "--messages", "20", "--isolate", "800")
        print(r.stdout, r.stderr, f"drill: {time.time() - t0:.1f} s")
        assert r.returncode == 0, r.stdout + r.stderr
        out = dict(l.split(None, 1) for l in r.stdout.splitlines()
                   if l and not l.startswith("the "))
        assert out["mode"] == mode
        assert int(out["rpo"]) == 0
        assert int(out["acknowledged"]) >= 21
        assert int(out["rto_ms"]) < 10000
        if mode == "sync":
            assert int(out["missing_at_promote"]) == 0
            assert int(out["acknowledged_isolated"]) == 0
        else:
            assert int(out["acknowledged_isolated"]) > 0
            # the isolated ones, and perhaps the last ones before the
            # isolation that udsync send had not shipped yet (async)
            assert int(out["missing_at_promote"]) >= \
                int(out["acknowledged_isolated"])
            # every acknowledged one, and perhaps one more that P had
            # made durable when the probe client gave up waiting
            assert int(out["redelivered"]) >= \
                int(out["missing_at_promote"]) > 0
        for name in ("mstored", "send", "recv"):
            pair.procs.pop(name).wait(timeout=10)
        # the rewound primary follows the DR site, byte for byte
        reverse_confs(pair)
        for name, d, role in (("recv", pair.pri, "recv"),
                              ("send", pair.dr, "send")):
            log = open(tmp_path / f"{name}2.log", "ab")
            pair.logs[name] = tmp_path / f"{name}2.log"
            pair.procs[name] = subprocess.Popen(
                [str(prog("udsync")), "-c", str(d / "mstore.conf"), role],
                stdout=log, stderr=log)
        end = time.time() + 30
        while True:
            v = run(prog("mstore"), "verify", pair.dr / "a", "--secondary",
                    pair.dr / "b", "--no-index", "--against", pair.pri / "a")
            if v.returncode == 0:
                break
            assert time.time() < end, v.stdout + v.stderr + \
                pair.log("recv") + pair.log("send")
            time.sleep(0.2)
    finally:
        pair.stop_all()
