"""replication = sync: a client hears "stored" only once the DR site has
the record durable.  kill -9 of the primary under load loses no
acknowledged message at the DR site (RPO 0); with the DR site away past
sync_timeout writes are refused with a temporary error (logged, in
status) until it is back."""
import os
import threading
import time

from replica_pair import Pair

STRESS = os.environ.get("MS_STRESS") == "1"


def dr_places(pair):
    r = pair.mstore("stats", "--offline", conf=pair.dr / "mstore.conf")
    assert r.returncode == 0, r.stdout + r.stderr
    st = dict(l.split(" ", 1) for l in r.stdout.splitlines())
    return int(st.get("log.records.place", "0"))


def test_sync_kill_primary_rpo0(tmp_path):
    rounds = 10 if STRESS else 3
    pair = Pair(tmp_path, extra_store="replication = sync\n"
                "sync_timeout = 5s\n")
    try:
        pair.start("mstored")
        pair.start("recv")
        pair.start("send")
        assert pair.mstore("user", "add", "u1").returncode == 0
        acked = 0
        for rnd in range(rounds):
            res = {"n": 0, "stop": False}

            def load():
                i = 0
                while not res["stop"]:
                    res["n"] += pair.deliver(1, seed=rnd * 10000 + i)
                    i += 1

            t = threading.Thread(target=load)
            t.start()
            time.sleep(1.0)
            pair.kill("mstored")
            res["stop"] = True
            t.join()
            acked += res["n"]
            assert res["n"] > 0
            # every acknowledged delivery is at the DR site already
            pair.kill("recv")
            assert dr_places(pair) >= acked, (acked, dr_places(pair))
            pair.start("recv")
            pair.start("mstored")
        st = pair.wait_caught_up()
        assert st["repl.sync"] == 1 and st["repl.degraded"] == 0
    finally:
        pair.stop_all()


def test_sync_timeout_refuses_then_recovers(tmp_path):
    pair = Pair(tmp_path, extra_store="replication = sync\n"
                "sync_timeout = 1s\n")
    try:
        pair.start("mstored")
        pair.start("recv")
        pair.start("send")
        assert pair.mstore("user", "add", "u1").returncode == 0
        assert pair.deliver(3, seed=1) == 3
        pair.kill("recv")
        # the first write waits sync_timeout, then is refused
        t0 = time.time()
        assert pair.deliver(1, seed=2) == 0
        assert time.time() - t0 >= 0.9
        st = pair.stats()
        assert st["repl.degraded"] == 1 and st["repl.state"] == 3
        assert pair.deliver(1, seed=3) == 0
        assert pair.stats()["repl.sync_refused"] >= 2
        assert "DEGRADED, refusing writes" in pair.log("mstored")
        pair.start("recv")
        end = time.time() + 20
        while time.time() < end and pair.stats()["repl.degraded"]:
            time.sleep(0.1)
        assert pair.stats()["repl.degraded"] == 0
        assert pair.deliver(2, seed=4) == 2
    finally:
        pair.stop_all()


def test_sync_fallback_async(tmp_path):
    pair = Pair(tmp_path, extra_store="replication = sync\n"
                "sync_timeout = 1s\nsync_fallback = async\n")
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        # no DR site at all: the first write waits, then goes async
        assert pair.deliver(2, seed=1) == 2
        st = pair.stats()
        assert st["repl.degraded"] == 1
        assert "falling back to async" in pair.log("mstored")
    finally:
        pair.stop_all()
