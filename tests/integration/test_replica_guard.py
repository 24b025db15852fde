"""A DR copy is read-only until it is promoted (docs/replication.md, "A
DR copy is read-only until promoted").  udsync recv marks the DR store a
replica (mstore.replica on both copies); a plain mstored and the writing
tools refuse it, mstored --standby, udsync recv, reindex and repair go
on; `mstore promote` clears the marker with its TIMELINE record.  A
promote cut short is consistent: still a replica, or promoted with its
TIMELINE record (states built by hand, and kill -9 at random moments of
a real promote)."""
import ctypes
import random
import shutil
import signal
import struct
import subprocess
import time

from conftest import prog, run
from replica_pair import Pair, plain_mstored_refused

REFUSAL = ("this store is a DR replica: start it with --standby, "
           "or mstore promote")

_xxh = ctypes.CDLL("libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def marker(state, timeline=0, fork=0):
    """mstore.replica (store/seg.h): 1 replica, 2 promoting."""
    b = b"MSTOREPL" + struct.pack("<IIQQ", 1, state, timeline, fork)
    return b + struct.pack("<Q", _xxh.XXH3_64bits(b, len(b)))


def timelines(conf):
    """new_timeline= of every TIMELINE record in the log."""
    r = run(prog("mstore"), "-c", conf, "dump")
    assert r.returncode == 0, r.stdout + r.stderr
    return [int(w.split("=")[1]) for line in r.stdout.splitlines()
            for w in line.split() if w.startswith("new_timeline=")]


def start_plain(conf, d):
    """mstored without --standby at d; its Popen once it answers."""
    log = open(d / "plain.log", "ab")
    p = subprocess.Popen([str(prog("mstored")), "-c", str(conf)],
                         stdout=log, stderr=log)
    for _ in range(200):
        if (d / "mstored-admin.sock").exists() and run(
                prog("mstore"), "-c", conf, "stats").returncode == 0:
            return p
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    p.wait()
    raise AssertionError("mstored did not start: " +
                         (d / "plain.log").read_text(errors="replace"))


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def dr_store(tmp_path, n=6):
    """A pair whose DR store has n messages, every process stopped."""
    pair = Pair(tmp_path, seg="1M")
    pair.start("mstored")
    assert pair.mstore("user", "add", "u1").returncode == 0
    assert pair.deliver(n) == n
    pair.start("recv")
    pair.start("send")
    assert pair.wait_identical().returncode == 0
    return pair


def test_dr_store_read_only_until_promote(tmp_path):
    pair = dr_store(tmp_path)
    dconf = pair.dr / "mstore.conf"
    plain = None
    try:
        # udsync recv marked both DR copies; the primary is not marked
        for c in ("a", "b"):
            assert (pair.dr / c / "mstore.replica").read_bytes() == \
                marker(1)
            assert not (pair.pri / c / "mstore.replica").exists()
        # the standby runs next to udsync recv, as before
        pair.start("standby")
        st = dict(l.split() for l in pair.mstore(
            "stats", conf=dconf).stdout.splitlines())
        assert st["repl.standby"] == "1"
        pair.kill("standby", sig=signal.SIGTERM)
        pair.kill("send")
        pair.kill("recv")
        # a plain mstored refuses, and says what to do
        out = plain_mstored_refused(dconf)
        assert REFUSAL in out, out
        # so do the tools that write records
        r = pair.mstore("compact", "--offline", conf=dconf)
        assert r.returncode != 0 and "DR replica" in r.stderr, r.stderr
        m = tmp_path / "x.eml"
        m.write_bytes(b"Subject: x\r\n\r\nx\r\n")
        r = run(prog("mstore"), "append", pair.dr / "a", "--secondary",
                pair.dr / "b", m)
        assert r.returncode != 0 and "DR replica" in r.stderr, r.stderr
        # reindex and repair write no record: they go on
        r = pair.mstore("reindex", conf=dconf)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run(prog("mstore"), "repair", pair.dr / "a", "--secondary",
                pair.dr / "b")
        assert r.returncode == 0, r.stdout + r.stderr
        # nothing was written: still the primary's bytes, and udsync
        # recv resumes on it
        assert pair.verify_against().returncode == 0
        pair.start("recv")
        pair.start("send")
        assert pair.deliver(3, seed=1) == 3
        assert pair.wait_identical().returncode == 0
        pair.stop_all()
        # the primary is lost: promote; the marker and udsync.pos go
        r = pair.mstore("promote", "--offline", conf=dconf)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "timeline 2" in r.stdout
        for c in ("a", "b"):
            assert not (pair.dr / c / "mstore.replica").exists()
            assert not (pair.dr / c / "udsync.pos").exists()
        # and it is an ordinary primary
        plain = start_plain(dconf, pair.dr)
        r = pair.mstore("deliver", "u1", "INBOX", m, conf=dconf)
        assert r.returncode == 0, r.stderr
        st = dict(l.split() for l in pair.mstore(
            "stats", conf=dconf).stdout.splitlines())
        assert st["log.timeline"] == "2"
        assert st["repl.standby"] == "0"
    finally:
        if plain is not None:
            stop(plain)
        pair.stop_all()


def restore(pair, snap):
    for c in ("a", "b"):
        shutil.rmtree(pair.dr / c)
        shutil.copytree(snap / c, pair.dr / c)


def test_promote_cut_short(tmp_path):
    pair = dr_store(tmp_path)
    dconf = pair.dr / "mstore.conf"
    plain = None
    try:
        pair.stop_all()
        snap = tmp_path / "snap"
        snap.mkdir()
        for c in ("a", "b"):
            shutil.copytree(pair.dr / c, snap / c)
        assert timelines(dconf) == []

        # 1. cut before its TIMELINE record was durable, between the two
        # copies' markers: still a replica; promote again: timeline 2
        (pair.dr / "a" / "mstore.replica").write_bytes(marker(2, 2, 7))
        out = plain_mstored_refused(dconf)
        assert REFUSAL in out, out
        assert (pair.dr / "a" / "mstore.replica").read_bytes() == \
            marker(2, 2, 7)
        r = pair.mstore("promote", "--offline", conf=dconf)
        assert r.returncode == 0 and "timeline 2" in r.stdout, r.stderr
        assert timelines(dconf) == [2]
        promoted = {c: (pair.dr / c / "log").iterdir() for c in ("a", "b")}
        promoted = {c: {p.name: p.read_bytes() for p in v}
                    for c, v in promoted.items()}
        fork = int(r.stdout.split("fork_seq")[1].split()[0])

        def cut_after_timeline():
            # the TIMELINE record durable, the markers (and udsync.pos)
            # not removed yet
            restore(pair, snap)
            for c in ("a", "b"):
                for name, data in promoted[c].items():
                    (pair.dr / c / "log" / name).write_bytes(data)
                (pair.dr / c / "mstore.replica").write_bytes(
                    marker(2, 2, fork))

        # 2. cut after it: promoted; a plain mstored finishes it
        cut_after_timeline()
        plain = start_plain(dconf, pair.dr)
        st = dict(l.split() for l in pair.mstore(
            "stats", conf=dconf).stdout.splitlines())
        assert st["log.timeline"] == "2"
        stop(plain)
        plain = None
        for c in ("a", "b"):
            assert not (pair.dr / c / "mstore.replica").exists()
            assert not (pair.dr / c / "udsync.pos").exists()
        assert timelines(dconf) == [2]
        # 3. the same, then promote again: no second TIMELINE record
        cut_after_timeline()
        r = pair.mstore("promote", "--offline", conf=dconf)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "timeline 2" in r.stdout and f"fork_seq {fork}" in r.stdout
        assert timelines(dconf) == [2]
        # 4. the same, then udsync recv (the operator keeps following
        # the old primary): it cuts to udsync.pos, TIMELINE included,
        # and the store is a replica again
        cut_after_timeline()
        pair.start("recv")
        for _ in range(200):
            if (pair.dr / "a" / "mstore.replica").read_bytes() == marker(1):
                break
            time.sleep(0.05)
        pair.kill("recv")
        for c in ("a", "b"):
            assert (pair.dr / c / "mstore.replica").read_bytes() == \
                marker(1)
        assert timelines(dconf) == []
        assert REFUSAL in plain_mstored_refused(dconf)

        # 5. kill -9 of a real promote at random moments: whatever is
        # left is a replica (promote again) or promoted, timeline 2 once
        rnd = random.Random(6)
        states = {"replica": 0, "promoted": 0}
        for i in range(16):
            restore(pair, snap)
            p = subprocess.Popen([str(prog("mstore")), "-c", str(dconf),
                                  "promote", "--offline"],
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0, 0.012))
            p.kill()
            p.wait()
            marked = [(pair.dr / c / "mstore.replica").exists()
                      for c in ("a", "b")]
            if any(marked):
                states["replica"] += 1
                r = pair.mstore("promote", "--offline", conf=dconf)
                assert r.returncode == 0, r.stdout + r.stderr
                assert "timeline 2" in r.stdout, r.stdout
            else:
                states["promoted"] += 1
            assert not any((pair.dr / c / "mstore.replica").exists()
                           for c in ("a", "b"))
            assert timelines(dconf) == [2], i
            # a writer opens it as an ordinary store
            r = pair.mstore("compact", "--offline", conf=dconf)
            assert r.returncode == 0, r.stdout + r.stderr
        print(f"promote killed: {states}")
    finally:
        if plain is not None:
            stop(plain)
        pair.stop_all()
