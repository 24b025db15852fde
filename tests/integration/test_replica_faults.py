"""udsync under faults: kill -9 of the sender, the receiver and the DR
site's standby mstored at random moments while mail is delivered; a
link cut; a bit flipped in flight; a frame replayed; a peer with the
wrong key.  The DR store always ends
byte-identical to the primary (mstore verify --against), and bad bytes
are refused, never written."""
import os
import random
import threading
import time

from msproto import Client, Error
from replica_pair import BitFlipProxy, Pair

STRESS = os.environ.get("MS_STRESS") == "1"


def check_identical(pair):
    pair.wait_caught_up(timeout=120)
    r = pair.verify_against()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "byte-identical" in r.stdout


def body(i, size=3000):
    return (f"Subject: load {i}\r\n\r\n".encode() +
            (f"{i:08d}-" * (size // 9)).encode() + b"\r\n")


def wait_for(fn, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def standby_check(pair, sent, rnd, timeout=60):
    """The standby (just restarted) catches up with what the primary
    had acknowledged, and its protocol reads return the right bodies."""
    snap = dict(sent)
    if not snap:
        return
    top = max(snap)
    sb = Client(pair.dr / "mstored.sock", user="u1")
    try:
        def caught_up():
            try:
                return sb.mbox_status("INBOX")["uidnext"] > top
            except Error:
                return False  # u1 not there yet
        assert wait_for(caught_up, timeout), (
            f"the standby did not catch up to uid {top}: "
            f"{pair.log('standby')[-2000:]}")
        uids = sorted(snap)
        for uid in uids[-3:] + rnd.sample(uids, min(3, len(uids))):
            assert sb.fetch_body("INBOX", uid) == snap[uid], uid
    finally:
        sb.close()


def test_kill_sender_receiver_and_standby(tmp_path):
    """kill -9 of udsync send, udsync recv (or both) and of the DR
    site's standby mstored at random moments while the primary takes
    appends: each standby restart catches up and reads the right
    bodies; at the end the DR store is byte-identical and the standby
    has every message."""
    kinds = ["send", "recv", "both", "standby"]
    per_kind = 50 if STRESS else 8      # 32 rounds in make check
    rnd = random.Random(6)
    plan = kinds * per_kind
    rnd.shuffle(plan)
    pair = Pair(tmp_path)
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pair.start("recv")
        pair.start("send")
        pair.wait_caught_up()
        pair.start("standby")
        sent = {}
        done = {"stop": False, "err": None}

        def load():
            try:
                c = Client(pair.pri / "mstored.sock", user="u1")
                i = 0
                while not done["stop"]:
                    b = body(i)
                    sent[c.append(b)] = b
                    i += 1
                    if i % 20 == 0:
                        time.sleep(0.01)  # leave the test some CPU
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                done["err"] = e

        t = threading.Thread(target=load)
        t.start()
        standby_kills = 0
        try:
            for who in plan:
                time.sleep(rnd.uniform(0.02, 0.4))
                for name in (["send", "recv"] if who == "both" else [who]):
                    pair.kill(name)
                time.sleep(rnd.uniform(0, 0.2))
                for name in ("recv", "send", "standby"):
                    if name not in pair.procs:
                        pair.start(name)
                if who == "standby":
                    standby_kills += 1
                    standby_check(pair, sent, rnd)
                assert done["err"] is None, done["err"]
        finally:
            done["stop"] = True
            t.join()
        assert done["err"] is None, done["err"]
        assert len(sent) > 100 and standby_kills == per_kind
        print(f"{len(plan)} rounds, {len(sent)} appends acknowledged")
        check_identical(pair)
        # the standby has every acknowledged message, byte for byte
        sb = Client(pair.dr / "mstored.sock", user="u1")
        assert wait_for(lambda: sb.mbox_status("INBOX")["messages"] ==
                        len(sent), 30), (sb.mbox_status("INBOX"),
                                         len(sent))
        for uid, b in sent.items():
            assert sb.fetch_body("INBOX", uid) == b, uid
        sb.close()
        pair.kill("standby", sig=15)
        pair.kill("recv")
        r = pair.mstore("verify", "--no-index", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        pair.stop_all()


def test_link_cut_bitflip_replay(tmp_path):
    pair = Pair(tmp_path)
    proxy = BitFlipProxy(pair.port)
    pair.dr_port = proxy.port
    pair.write_confs()
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pair.start("recv")
        pair.start("send")
        assert pair.deliver(50, seed=1) == 50
        check_identical(pair)
        # cut and restore the link
        proxy.block = True
        proxy.cut()
        assert pair.deliver(50, seed=2) == 50
        time.sleep(0.5)
        assert pair.stats()["repl.lag_records"] > 0
        proxy.block = False
        check_identical(pair)
        # one bit flipped in flight: the frame does not open, the link
        # is dropped, the sender resumes and re-sends
        proxy.cut()
        proxy.flip_at = 3000
        assert pair.deliver(80, seed=3, size=3000) == 80
        check_identical(pair)
        assert proxy.flips == 1
        assert "does not open" in pair.log("recv")
        # a frame replayed: refused the same way
        proxy.replay_next = 1
        proxy.cut()
        assert pair.deliver(80, seed=4, size=3000) == 80
        check_identical(pair)
        assert proxy.replays == 1
        assert pair.log("recv").count("does not open") >= 2
    finally:
        pair.stop_all()
        proxy.close()


def test_wrong_key_refused(tmp_path):
    pair = Pair(tmp_path)
    # the DR site pins a key that is not the sender's
    from replica_pair import keygen
    other = keygen(tmp_path / "other.key")
    pair.write_confs(dr_peer=other)
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        assert pair.deliver(5, seed=1) == 5
        pair.start("recv")
        pair.start("send")
        time.sleep(1.5)
        assert "is not the pinned peer_key: refused" in pair.log("recv")
        assert not (pair.dr / "a" / "mstore.meta").exists()
        assert pair.stats()["repl.connected"] == 0
    finally:
        pair.stop_all()
