"""udsync recv and power loss at the DR site.  One receiver flush spans
several of the primary's batches, so a flush torn by a power loss can
leave a valid batch-start record after a damaged one, which the engine's
recovery takes for damage to acknowledged records and refuses to cut.
udsync recv writes its durable position (udsync.pos) after each flush's
fdatasync and before its ACK, and cuts the DR log to it before the
engine's recovery.  Simulated here: the receiver is killed, the last
flushes are garbled in the middle and udsync.pos is put back to where it
was before them (what a power loss during those flushes leaves)."""
import os

from replica_pair import Pair


def identical(pair):
    r = pair.wait_identical()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "byte-identical" in r.stdout


def test_torn_receiver_flush_is_cut_to_the_durable_position(tmp_path):
    pair = Pair(tmp_path, seg="4M")
    seg1 = "log/000000000001.seg"
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pair.start("recv")
        pair.start("send")
        assert pair.deliver(30, seed=1, size=3000) == 30
        identical(pair)
        pair.kill("recv")
        saved = {c: (pair.dr / c / "udsync.pos").read_bytes()
                 for c in ("a", "b")}
        p0 = (pair.dr / "a" / seg1).stat().st_size
        # several primary batches arrive in later flushes
        pair.start("recv")
        assert pair.deliver(60, seed=2, size=3000) == 60
        identical(pair)
        pair.kill("recv")
        pair.kill("send")
        p1 = (pair.dr / "a" / seg1).stat().st_size
        assert p1 - p0 > 100_000
        # the power loss: the middle of what came after p0 never reached
        # the disk, on either copy, and neither did the position files
        at = p0 + (p1 - p0) // 3
        for c in ("a", "b"):
            with open(pair.dr / c / seg1, "r+b") as f:
                f.seek(at)
                f.write(b"\0" * 4096)
            (pair.dr / c / "udsync.pos").write_bytes(saved[c])
        # the engine's recovery alone refuses to cut it
        r = pair.mstore("repair", conf=pair.dr / "mstore.conf")
        assert r.returncode != 0
        assert "acknowledged records follow" in r.stdout + r.stderr
        # udsync recv cuts to its durable position first, then catches up
        pair.start("recv")
        pair.start("send")
        identical(pair)
        log = pair.log("recv")
        assert "event=recover.tail_cut" in log \
            or "event=recover.segment_moved" in log, log[-2000:]
        lf = os.listdir(pair.dr / "a" / "lost+found")
        assert any("udsync-cut" in n for n in lf), lf
        pair.kill("recv")
        r = pair.mstore("verify", "--no-index", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        pair.stop_all()
