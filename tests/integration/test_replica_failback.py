"""Failback (docs/replication.md): an async pair; some mail shipped,
then udsync send stopped and more mail acknowledged at the primary P
only; P's mstored killed (-9); the DR store D promoted and given new
mail; `mstore failback` at P, killed in the middle of its re-delivery
and run again: every message P acknowledged is at D exactly once (the
unshipped ones flagged $MstoreRedelivered), P is rewound and follows D
as its new DR site (udsync send at D, recv at P, byte-identical), and a
standby at P serves the mail.  Stores that diverged before the fork are
refused and left as they were."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

from conftest import prog, run
from msproto import Client
from replica_pair import Pair, free_port, plain_mstored_refused


def body(tag, i, size=1500):
    return (f"Subject: {tag} {i}\r\n\r\n".encode() +
            (f"{tag}-{i}-" * (size // 10)).encode() + b"\r\n")


def h(b):
    return hashlib.sha256(b).hexdigest()


def all_mail(c, mailboxes):
    """{sha256(body): [(mailbox, uid, keywords), ...]}"""
    out = {}
    for mb in mailboxes:
        for m in c.fetch_meta(mb):
            b = c.fetch_body(mb, m["uid"])
            out.setdefault(h(b), []).append((mb, m["uid"], m["keywords"]))
    return out


def reverse_confs(pair):
    """P becomes the DR site of D: recv at P, send at D."""
    port = free_port()
    for d, tail in ((pair.pri, f"peer_key = {pair.pub_d}\n"
                     f"listen = 127.0.0.1:{port}\n"),
                    (pair.dr, f"peer_key = {pair.pub_p}\n"
                     f"connect = 127.0.0.1:{port}\n"
                     "reconnect_delay = 200ms\n")):
        conf = (d / "mstore.conf").read_text()
        conf = conf[:conf.index("[udsync]")]
        (d / "mstore.conf").write_text(
            conf + "[udsync]\nkey_file = udsync.key\n" + tail +
            "timeout = 5s\n")


def failover(pair, tmp_path):
    """Ship some, then stop shipping, acknowledge more at P, kill P,
    promote D.  Returns (acked bodies at P by mailbox, unshipped set,
    the expunged body)."""
    pair.start("mstored")
    pair.start("recv")
    pair.start("send")
    assert pair.mstore("user", "add", "u1").returncode == 0
    assert pair.mstore("mailbox", "add", "u1", "Work").returncode == 0
    pri = Client(pair.pri / "mstored.sock", user="u1")
    acked = {}
    for i in range(20):
        b = body("shipped", i)
        pri.append(b)
        acked[h(b)] = "INBOX"
    assert pair.wait_identical().returncode == 0
    pair.start("standby")
    # the link goes: nothing more reaches D
    pair.kill("send")
    unshipped = set()
    for i in range(30):
        b = body("unshipped", i)
        mb = "Work" if i % 6 == 0 else "INBOX"
        pri.append(b, mailbox=mb, keywords=("$Label1",) if i % 5 == 0
                   else ())
        acked[h(b)] = mb
        unshipped.add(h(b))
    # one unshipped message expunged at P (not there at the end: not
    # re-delivered), one shipped one too (a change not replayed)
    gone = body("unshipped-gone", 0)
    uid = pri.append(gone)
    pri.expunge("INBOX", [(uid, uid)])
    pri.close()
    pair.kill("mstored")            # the primary site is lost
    pair.kill("recv")
    r = pair.mstore("promote", conf=pair.dr / "mstore.conf")
    assert r.returncode == 0, r.stdout + r.stderr
    dr = Client(pair.dr / "mstored.sock", user="u1")
    for i in range(5):
        b = body("after", i)
        dr.append(b)
        acked[h(b)] = "INBOX"
    dr.close()
    return acked, unshipped, h(gone)


def test_failback_redelivers_and_follows(tmp_path):
    pair = Pair(tmp_path, seg="1M")
    try:
        acked, unshipped, gone = failover(pair, tmp_path)
        dsock = pair.dr / "mstored-admin.sock"
        # a dry run changes nothing
        r = pair.mstore("failback", "--to", dsock, "--dry-run")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "fork check: both stores agree" in r.stdout, r.stdout
        assert "31 messages placed" in r.stdout, r.stdout
        # killed in the middle of its re-delivery...
        p = subprocess.Popen(
            [str(prog("mstore")), "-c", str(pair.pri / "mstore.conf"),
             "failback", "--to", str(dsock)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        n = 0
        for line in p.stdout:
            if line.startswith("re-delivered:"):
                n += 1
                if n == 5:
                    # D stops answering, so failback is surely in the
                    # middle (a request in flight included) when killed
                    sb = pair.procs["standby"].pid
                    os.kill(sb, signal.SIGSTOP)
                    time.sleep(0.2)
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=30)
                    os.kill(sb, signal.SIGCONT)
                    break
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL, \
            line + p.stdout.read() + p.stderr.read()
        # ...and run again: no duplicates
        t0 = time.time()
        r = pair.mstore("failback", "--to", dsock)
        print(f"failback: {time.time() - t0:.2f} s")
        print(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"re-delivered (\d+), already there (\d+), "
                      r"expunged past the fork (\d+), failed 0", r.stdout)
        assert m, r.stdout
        again, already, expunged = map(int, m.groups())
        assert already >= 5 and again + already == 30 and expunged == 1
        assert "not replayed: seq" in r.stdout and "expunge" in r.stdout
        # every message P acknowledged is at D, once
        dr = Client(pair.dr / "mstored.sock", user="u1")
        mail = all_mail(dr, ["INBOX", "Work"])
        for k, mb in acked.items():
            assert k in mail, f"acknowledged message missing at D ({mb})"
            assert len(mail[k]) == 1, f"twice at D: {mail[k]}"
            where, uid, kws = mail[k][0]
            assert where == mb
            if k in unshipped:
                assert "$MstoreRedelivered" in kws, kws
                assert any(x.startswith("$MstoreFrom-1-") for x in kws)
            else:
                assert "$MstoreRedelivered" not in kws
        assert gone not in mail
        assert len(mail) == len(acked)
        labelled = [m for m in mail.values() if "$Label1" in m[0][2]]
        assert len(labelled) == 6
        dr.close()
        # the rewound P follows D: udsync send at D, recv at P
        assert list((pair.pri / "a" / "lost+found").glob("*.failback.*"))
        assert not (pair.pri / "a" / "index" / "data.mdb").exists()
        # the rewound P is a DR replica: a plain mstored refuses it
        for c in ("a", "b"):
            assert (pair.pri / c / "mstore.replica").exists()
        out = plain_mstored_refused(pair.pri / "mstore.conf")
        assert "this store is a DR replica" in out, out
        reverse_confs(pair)
        for name, conf, role in (("recv", pair.pri, "recv"),
                                 ("send", pair.dr, "send")):
            log = open(tmp_path / f"{name}2.log", "ab")
            pair.logs[name] = tmp_path / f"{name}2.log"
            pair.procs[name] = subprocess.Popen(
                [str(prog("udsync")), "-c", str(conf / "mstore.conf"),
                 role], stdout=log, stderr=log)
        dconf = pair.dr / "mstore.conf"
        end = time.time() + 30
        while True:
            st = dict(l.split() for l in pair.mstore(
                "stats", conf=dconf).stdout.splitlines())
            if st.get("repl.connected") == "1" and \
                    st.get("repl.lag_records") == "0":
                break
            assert time.time() < end, (st, pair.log("recv"),
                                       pair.log("send"))
            time.sleep(0.1)
        r = None
        while time.time() < end:
            r = run(prog("mstore"), "verify", pair.dr / "a", "--secondary",
                    pair.dr / "b", "--no-index", "--against", pair.pri / "a")
            if r.returncode == 0:
                break
            time.sleep(0.2)
        assert r.returncode == 0, r.stdout + r.stderr
        # a standby at P serves the mail, re-delivered ones included
        log = open(tmp_path / "pstandby.log", "ab")
        pair.procs["pstandby"] = subprocess.Popen(
            [str(prog("mstored")), "-c", str(pair.pri / "mstore.conf"),
             "--standby"], stdout=log, stderr=log)
        sock = pair.pri / "mstored.sock"
        for _ in range(200):
            if sock.exists():
                try:
                    c = Client(sock, user="u1")
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise AssertionError("standby at P did not start")
        for _ in range(100):
            if c.mbox_status("INBOX")["messages"] + \
                    c.mbox_status("Work")["messages"] == len(acked):
                break
            time.sleep(0.1)
        assert all_mail(c, ["INBOX", "Work"]).keys() == mail.keys()
        c.close()
    finally:
        pair.kill("pstandby", sig=signal.SIGTERM)
        pair.stop_all()


def test_failback_refuses_diverged(tmp_path):
    pair = Pair(tmp_path, seg="1M")
    try:
        pair.start("mstored")
        pair.start("recv")
        pair.start("send")
        assert pair.mstore("user", "add", "u1").returncode == 0
        pri = Client(pair.pri / "mstored.sock", user="u1")
        for i in range(10):
            pri.append(body("common", i))
        pri.close()
        assert pair.wait_identical().returncode == 0
        # a snapshot of P here; P goes on and D gets all of it
        pair.kill("mstored", sig=signal.SIGTERM)
        snap = tmp_path / "snap"
        snap.mkdir()
        for c in ("a", "b"):
            shutil.copytree(pair.pri / c, snap / c)
        pair.start("mstored")
        pri = Client(pair.pri / "mstored.sock", user="u1")
        for i in range(10):
            pri.append(body("later", i))
        pri.close()
        assert pair.wait_identical().returncode == 0
        pair.kill("send")
        pair.kill("mstored")
        pair.kill("recv")
        pair.start("standby")
        r = pair.mstore("promote", conf=pair.dr / "mstore.conf")
        assert r.returncode == 0, r.stdout + r.stderr
        # P comes back from the snapshot and writes other mail: its log
        # differs from D's before D's fork
        for c in ("a", "b"):
            shutil.rmtree(pair.pri / c)
            shutil.copytree(snap / c, pair.pri / c)
        pair.start("mstored")
        pri = Client(pair.pri / "mstored.sock", user="u1")
        for i in range(14):
            pri.append(body("other", i, size=900))
        pri.close()
        pair.kill("mstored", sig=signal.SIGTERM)
        before = {p.name: p.read_bytes()
                  for p in (pair.pri / "a" / "log").iterdir()}
        r = pair.mstore("failback", "--to", pair.dr / "mstored-admin.sock")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "diverged before the fork" in r.stderr, r.stderr
        after = {p.name: p.read_bytes()
                 for p in (pair.pri / "a" / "log").iterdir()}
        assert before == after
        assert not (pair.pri / "a" / "udsync.pos").exists()
        dr = Client(pair.dr / "mstored.sock", user="u1")
        assert dr.mbox_status("INBOX")["messages"] == 20
        dr.close()
    finally:
        pair.stop_all()
