"""udsync and compaction: the primary compacts (undelete_window = 0,
expunge, mstore compact) and the DR store ends byte-identical, also
after a receiver restart; and the stall that used to follow a sealed
segment whose send was cut, then resumed after the primary compacted it
(old bytes before the resume point, new after: the seal's checksum does
not match), is gone: the receiver fetches the segment again whole."""
import time

from msproto import Client
from replica_pair import BitFlipProxy, Pair


def identical(pair):
    r = pair.wait_identical()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "byte-identical" in r.stdout


def compact(pair):
    # undelete_window = 0: what was expunged before this second is purged
    time.sleep(1.1)
    r = pair.mstore("compact", "--threshold", "1000")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_compaction_mirrored_and_resumed_across_compaction(tmp_path):
    pair = Pair(tmp_path, extra_store="undelete_window = 0\n", seg="4M")
    proxy = BitFlipProxy(pair.port)
    pair.dr_port = proxy.port
    pair.write_confs()
    seg1 = "log/000000000001.seg"
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        # segment 1: 40 messages to expunge first, then enough to seal it
        assert pair.deliver(40, seed=1, size=20000) == 40
        assert pair.deliver(200, seed=2, size=20000) == 200
        c = Client(pair.pri / "mstored.sock", user="u1")
        c.expunge("INBOX", [(1, 40)])
        c.close()
        # the DR site gets the first MiB of segment 1, then the link is cut
        proxy.cut_after = 1_500_000
        pair.start("recv")
        pair.start("send")
        end = time.time() + 30
        while time.time() < end:
            f = pair.dr / "a" / seg1
            if proxy.cuts == 1 and f.exists() and \
                    f.stat().st_size >= 1_000_000:
                break
            time.sleep(0.05)
        assert proxy.cuts == 1
        time.sleep(0.5)
        size_before = (pair.dr / "a" / seg1).stat().st_size
        assert 1_000_000 <= size_before < 4_000_000, size_before
        # the primary compacts segment 1 while the link is down
        out = compact(pair)
        assert pair.stats()["compact.segments"] >= 1, out
        proxy.block = False
        identical(pair)
        assert "event=refetch.start segment=1" in pair.log("recv"), \
            pair.log("recv")[-3000:]
        assert "event=refetch.done" in pair.log("recv")
        assert not list((pair.dr / "a" / "log").glob("*.refetch"))
        # a receiver restart keeps it identical
        pair.kill("recv")
        pair.start("recv")
        identical(pair)
        # compaction while streaming: the RETIRE compacts the DR copy
        assert pair.deliver(150, seed=3, size=20000) == 150
        c = Client(pair.pri / "mstored.sock", user="u1")
        c.expunge("INBOX", [(41, 120)])
        c.close()
        identical(pair)
        n = pair.stats()["compact.segments"]
        compact(pair)
        assert pair.stats()["compact.segments"] > n
        identical(pair)
        assert "event=compaction.mirrored" in pair.log("recv")
        pair.kill("recv")
        pair.start("recv")
        identical(pair)
        pair.kill("recv")
        r = pair.mstore("verify", "--no-index", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        pair.stop_all()
        proxy.close()
