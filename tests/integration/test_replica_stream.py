"""udsync: a primary and a DR store on one machine, streaming under load
and ending byte-identical (mstore verify --against)."""
import os

from replica_pair import Pair

STRESS = os.environ.get("MS_STRESS") == "1"


def test_initial_sync_and_streaming(tmp_path):
    pair = Pair(tmp_path)
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        # a backlog before the DR site exists: initial sync
        assert pair.deliver(150, seed=1) == 150
        pair.start("recv")
        pair.start("send")
        st = pair.wait_caught_up()
        assert st["repl.state"] == 2
        # streaming while delivering
        n = 3000 if STRESS else 400
        assert pair.deliver(n, seed=2, size=4000) == n
        st = pair.wait_caught_up()
        assert st["log.segments"] >= 2
        r = pair.verify_against()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "byte-identical" in r.stdout
        # the DR store checks out on its own
        pair.kill("recv")
        r = pair.mstore("verify", "--no-index", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        pair.stop_all()


def test_stream_20000_deliveries(tmp_path):
    """20,000 deliveries through the protocol (16 clients, 4 users) while
    udsync streams and a standby follows at the DR site: at the end the
    DR store is byte-identical, the standby has all 20,000 with their
    bodies, and it took well under two minutes."""
    import threading
    import time

    from msproto import Client

    total = 60000 if STRESS else 20000
    nthreads, users = 16, ["u1", "u2", "u3", "u4"]
    pair = Pair(tmp_path, seg="4M")
    t0 = time.time()
    try:
        pair.start("mstored")
        for u in users:
            assert pair.mstore("user", "add", u).returncode == 0
        pair.start("recv")
        pair.start("send")
        pair.wait_caught_up()
        pair.start("standby")

        def body(k, i):
            return (f"Subject: s{k}-{i}\r\nMessage-ID: <{k}.{i}@t>\r\n\r\n"
                    .encode() + (f"{k}:{i};" * (60 + i % 90)).encode()
                    + b"\r\n")

        acked = [dict() for _ in range(nthreads)]
        errors = []

        def load(k):
            try:
                c = Client(pair.pri / "mstored.sock", user=users[k % 4])
                for i in range(total // nthreads):
                    acked[k][c.append(body(k, i))] = i
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        ts = [threading.Thread(target=load, args=(k,))
              for k in range(nthreads)]
        for t in ts:
            t.start()
        # the lag while streaming, as mstored reports it
        lags = []
        while any(t.is_alive() for t in ts):
            st = pair.stats()
            lags.append((st["repl.lag_records"], st["repl.lag_ms"]))
            time.sleep(0.25)
        for t in ts:
            t.join()
        t_load = time.time() - t0
        assert not errors, errors
        assert sum(len(a) for a in acked) == total
        st = pair.wait_caught_up(timeout=60)
        r = pair.verify_against()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "byte-identical" in r.stdout
        # the standby sees all of them, each body as delivered
        sbs = {u: Client(pair.dr / "mstored.sock", user=u) for u in users}
        want = {u: sum(len(acked[k]) for k in range(nthreads)
                       if users[k % 4] == u) for u in users}
        end = time.time() + 30
        while time.time() < end and any(
                sbs[u].mbox_status("INBOX")["messages"] != want[u]
                for u in users):
            time.sleep(0.1)
        for u in users:
            assert sbs[u].mbox_status("INBOX")["messages"] == want[u], u
        for k in range(nthreads):
            sb = sbs[users[k % 4]]
            for uid, i in acked[k].items():
                assert sb.fetch_body("INBOX", uid) == body(k, i), (k, i)
        for c in sbs.values():
            c.close()
        took = time.time() - t0
        worst = max(lags) if lags else (0, 0)
        print(f"{total} deliveries in {t_load:.1f} s, all checked in "
              f"{took:.1f} s; segments {st['log.segments']}; worst lag "
              f"seen {worst[0]} records / {worst[1]} ms")
        assert took < 120, took
    finally:
        pair.stop_all()
