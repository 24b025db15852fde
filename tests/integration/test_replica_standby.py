"""mstored --standby at the DR site and mstore promote.  The standby
opens the DR store read-only (udsync recv writes it), serves reads
through the protocol, refuses every write (-EROFS), and sees new mail
within about a second.  Failover: the primary is killed under load
(replication = sync), udsync recv is stopped, the standby is promoted
(a TIMELINE record, new timeline) and accepts writes; every delivery
the primary acknowledged is at the DR site with its bytes (RPO 0)."""
import errno
import threading
import time

import pytest

from msproto import Client, Error
from replica_pair import Pair


def wait_for(fn, timeout=10, step=0.02):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def body(tag, i, size=2000):
    return (f"Subject: {tag} {i}\r\n\r\n".encode() +
            (f"{tag}-{i}-" * (size // 10)).encode() + b"\r\n")


def test_standby_reads_and_refuses_writes(tmp_path):
    pair = Pair(tmp_path, seg="1M")
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pri = Client(pair.pri / "mstored.sock", user="u1")
        sent = {}
        for i in range(30):
            b = body("a", i)
            sent[pri.append(b)] = b
        pair.start("recv")
        pair.start("send")
        assert pair.wait_identical().returncode == 0
        pair.start("standby")
        sb = Client(pair.dr / "mstored.sock", user="u1")
        assert sb.mbox_status("INBOX")["messages"] == 30
        for uid, b in sent.items():
            assert sb.fetch_body("INBOX", uid) == b
        # writes are refused, clearly
        with pytest.raises(Error) as e:
            sb.append(b"Subject: no\r\n\r\nno\r\n")
        assert e.value.status == -errno.EROFS
        assert "standby" in e.value.reason
        with pytest.raises(Error) as e:
            sb.expunge("INBOX", [(1, 1)])
        assert e.value.status == -errno.EROFS
        r = pair.mstore("user", "add", "u2", conf=pair.dr / "mstore.conf")
        assert r.returncode != 0 and "standby" in r.stderr + r.stdout
        st = sb.stats()
        assert st["repl.standby"] == 1
        # new mail on the primary shows at the standby within ~1 s
        worst = 0
        for i in range(10):
            b = body("b", i)
            t0 = time.time()
            uid = pri.append(b)
            n = wait_for(lambda: sb.mbox_status("INBOX")["messages"] ==
                         31 + i, timeout=5)
            worst = max(worst, time.time() - t0)
            assert n, "the standby did not see the new message"
            assert sb.fetch_body("INBOX", uid) == b
        print(f"standby visibility: worst {worst * 1000:.0f} ms")
        assert worst < 2.0
        # across several segments, while the standby follows
        for i in range(300):
            b = body("c", i, 12000)
            sent[pri.append(b)] = b
        assert pair.wait_identical().returncode == 0
        assert wait_for(lambda: sb.mbox_status("INBOX")["messages"] ==
                        340, timeout=10)
        assert pair.stats()["log.segments"] >= 2
        for uid, b in list(sent.items())[-5:]:
            assert sb.fetch_body("INBOX", uid) == b
        # promote refuses while udsync recv holds the store
        r = pair.mstore("promote", conf=pair.dr / "mstore.conf")
        assert r.returncode != 0
        assert "udsync recv" in r.stderr, r.stderr
        sb.close()
        pri.close()
    finally:
        pair.stop_all()


def test_failover_promote_rpo0_rto(tmp_path):
    pair = Pair(tmp_path, extra_store="replication = sync\n"
                "sync_timeout = 5s\n")
    try:
        pair.start("mstored")
        pair.start("recv")
        pair.start("send")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pair.wait_caught_up()
        pair.start("standby")
        acked = {}
        stop = {"v": False}

        def load(k):
            try:
                c = Client(pair.pri / "mstored.sock", user="u1")
                i = 0
                while not stop["v"]:
                    b = body(f"load{k}", i)
                    uid = c.append(b)
                    acked[uid] = b
                    i += 1
            except (OSError, Error, ConnectionError):
                pass

        ts = [threading.Thread(target=load, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
        time.sleep(2.0)
        # the primary site is lost
        pair.kill("mstored")
        t_kill = time.time()
        pair.kill("send")
        stop["v"] = True
        for t in ts:
            t.join()
        assert len(acked) > 10
        # failover: stop udsync recv, promote the standby
        pair.kill("recv")
        r = pair.mstore("promote", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "timeline 2" in r.stdout, r.stdout
        # the DR store was a replica; promote (op 52) ended that
        for c in ("a", "b"):
            assert not (pair.dr / c / "mstore.replica").exists()
            assert not (pair.dr / c / "udsync.pos").exists()
        dr = Client(pair.dr / "mstored.sock", user="u1")
        uid_new = dr.append(b"Subject: after failover\r\n\r\nhello\r\n")
        rto = time.time() - t_kill
        print(f"RTO (kill to an APPEND at DR): {rto * 1000:.0f} ms; "
              f"acknowledged {len(acked)}")
        # RPO 0, message by message
        for uid, b in acked.items():
            assert dr.fetch_body("INBOX", uid) == b, uid
        assert uid_new > max(acked)
        # the LMTP/tool path too
        m = tmp_path / "x.eml"
        m.write_bytes(b"Subject: via deliver\r\n\r\nx\r\n")
        r = pair.mstore("deliver", "u1", "INBOX", m,
                        conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stderr
        st = dr.stats()
        assert st["repl.standby"] == 0
        assert st["log.timeline"] == 2
        dr.close()
        # the promoted store checks out, and restarts read-write
        pair.kill("standby", sig=15)
        r = pair.mstore("verify", "--no-index", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
        r = pair.mstore("dump", conf=pair.dr / "mstore.conf")
        assert "timeline" in r.stdout.lower()
    finally:
        pair.stop_all()
