"""udsync under faults: kill -9 of the sender and the receiver at random
moments while mail is delivered; a link cut; a bit flipped in flight; a
frame replayed; a peer with the wrong key.  The DR store always ends
byte-identical to the primary (mstore verify --against), and bad bytes
are refused, never written."""
import os
import random
import threading
import time

from replica_pair import BitFlipProxy, Pair

STRESS = os.environ.get("MS_STRESS") == "1"


def check_identical(pair):
    pair.wait_caught_up(timeout=120)
    r = pair.verify_against()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "byte-identical" in r.stdout


def test_kill_sender_and_receiver(tmp_path):
    rounds = 200 if STRESS else 30
    pair = Pair(tmp_path)
    rnd = random.Random(6)
    try:
        pair.start("mstored")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pair.start("recv")
        pair.start("send")
        done = {"n": 0, "stop": False}

        def load():
            i = 0
            while not done["stop"]:
                done["n"] += pair.deliver(5, seed=1000 + i, size=3000)
                i += 1

        t = threading.Thread(target=load)
        t.start()
        try:
            for _ in range(rounds):
                time.sleep(rnd.uniform(0.02, 0.4))
                who = rnd.choice(["send", "recv", "both"])
                for name in (["send", "recv"] if who == "both" else [who]):
                    pair.kill(name)
                time.sleep(rnd.uniform(0, 0.2))
                for name in ("recv", "send"):
                    if name not in pair.procs:
                        pair.start(name)
        finally:
            done["stop"] = True
            t.join()
        assert done["n"] > 0
        check_identical(pair)
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
        proxy.cut()
        proxy.replay_frame = 4
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
