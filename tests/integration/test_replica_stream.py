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
