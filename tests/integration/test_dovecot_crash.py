"""Crashes: kill -9 of the imap process during APPENDs, and of mstored
during STORE/EXPUNGE and during RENAME INBOX.  Afterwards the store and what IMAP shows agree,
and no acknowledged APPEND or flag change is lost."""
import os
import re
import signal
import threading
import time

import msproto
from dovecot_stack import wait_gone
from test_dovecot_imap import MSG, fetch_map, ok, uids


def imap_view(c, box="INBOX"):
    ok(c.select(box))
    out = {}
    for uid, line in fetch_map(c, "1:*", "(UID FLAGS)").items():
        f = re.search(rb"FLAGS \(([^)]*)\)", line).group(1).decode().split()
        out[uid] = sorted(x for x in f if x != "\\Recent")
    return out


def test_kill_imap_during_append(stack):
    stack.allow_errors = True   # the master logs the killed child
    big = MSG + b"x" * 2_000_000 + b"\r\n"
    acked = []
    for round_ in range(3):
        c = stack.imap()
        pids = stack.imap_pids()
        assert len(pids) == 1, pids
        done = threading.Event()

        def appender():
            try:
                while True:
                    data = ok(c.append("INBOX", None, None, big))
                    acked.append(int(re.search(rb"APPENDUID \d+ (\d+)",
                                               data[0]).group(1)))
            except Exception:   # noqa: BLE001 - the kill ends it
                pass
            done.set()

        t = threading.Thread(target=appender)
        t.start()
        time.sleep(0.3 + 0.2 * round_)
        os.kill(pids[0], signal.SIGKILL)
        assert wait_gone(pids[0])
        done.wait(30)
        t.join(30)
    assert acked
    c = stack.imap()
    view = imap_view(c)
    # every acknowledged APPEND is there; the store and IMAP agree
    assert set(acked) <= set(view), (acked, sorted(view))
    assert stack.store_view("alice", "INBOX") == view
    for u in acked[:2]:
        body = ok(c.uid("FETCH", str(u), "(BODY.PEEK[])"))[0][1]
        assert body == big
    c.logout()
    problems = [l for l in stack.log_problems()
                if "killed with signal 9" not in l]
    assert not problems, problems


def test_kill_mstored_during_store_expunge(stack):
    stack.allow_errors = True   # store unreachable while it restarts
    for i in range(120):
        stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    ok(c.select("INBOX"))
    acked_flags = {}
    acked_expunged = set()
    failures = []
    stop = threading.Event()

    def changer():
        n = 0
        while not stop.is_set() and n < 120:
            n += 1
            uid = n
            try:
                typ, _ = c.uid("STORE", str(uid), "+FLAGS", r"(\Flagged)")
                if typ == "OK":
                    acked_flags[uid] = "\\Flagged"
                if uid % 3 == 0:
                    typ, _ = c.uid("STORE", str(uid), "+FLAGS",
                                   r"(\Deleted)")
                    typ2, _ = c.uid("EXPUNGE", str(uid))
                    if typ == "OK" and typ2 == "OK":
                        acked_expunged.add(uid)
            except Exception:   # noqa: BLE001 - store down: NO/BYE
                failures.append(uid)
                time.sleep(0.05)
            time.sleep(0.01)

    t = threading.Thread(target=changer)
    t.start()
    time.sleep(0.3)
    stack.kill_mstored(signal.SIGKILL)
    time.sleep(0.5)
    stack.start_mstored()
    t.join(120)
    stop.set()
    # whatever the session queued while the store was down is pushed
    # by the next sync; then a new session, the old one and the store
    # agree
    try:
        ok(c.noop())
        old_view = imap_view(c)
    except Exception:   # noqa: BLE001 - the old session may be gone
        old_view = None
    c2 = stack.imap()
    ok(c2.noop())
    view = imap_view(c2)
    store = stack.store_view("alice", "INBOX")
    assert store == view
    if old_view is not None:
        assert old_view == view
    for uid in acked_expunged:
        assert uid not in store
    for uid, f in acked_flags.items():
        if uid in store:
            assert f in store[uid], (uid, store[uid])
    c2.logout()
    print("acked", len(acked_flags), "expunged", len(acked_expunged),
          "failures", failures)
    problems = [l for l in stack.log_problems()
                if "mstore" not in l and "Internal error" not in l]
    assert not problems, problems


def _message_ids(c, box):
    """Message-ID -> how many times, of the messages in box (an empty
    dict for a box that does not exist)."""
    typ, data = c.select(box)
    out = {}
    if typ != "OK" or data == [b"0"]:
        return out
    data = ok(c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"))
    for item in data:
        if isinstance(item, tuple):
            m = re.search(rb"<[^>]+>", item[1])
            out[m.group(0)] = out.get(m.group(0), 0) + 1
    return out


def test_kill_mstored_during_rename_inbox(stack):
    """kill -9 of mstored while RENAME INBOX's store MOVE is written
    (4 rounds of 2,000 messages, the kill 1-14 ms after the command,
    seeded; the RENAME takes about 16 ms here): after a restart every message INBOX held is in INBOX or in
    the new folder (copies too many allowed, none lost); a RENAME that
    was answered OK left INBOX empty and each message in the new folder
    once; the store and IMAP agree on both folders."""
    import random

    import msproto
    stack.allow_errors = True   # store unreachable while it restarts
    rnd = random.Random(4242)
    n = 2000
    outcomes = []
    for round_ in range(4):
        m = msproto.Client(stack.p("mstored.sock"), user="alice")
        for i in range(n):
            m.append(MSG.replace(b"<1@example.test>",
                                 b"<r%d-%d@example.test>" % (round_, i)))
        m.close()
        c = stack.imap()
        before = _message_ids(c, "INBOX")
        ok(c.unselect())
        assert len(before) >= n
        dest = "Renamed%d" % round_
        got = []

        def rename():
            try:
                got.append(c.rename("INBOX", dest)[0])
            except Exception as e:   # noqa: BLE001 - the kill ends it
                got.append(repr(e))

        t = threading.Thread(target=rename)
        t.start()
        time.sleep(rnd.uniform(0.001, 0.014))
        stack.kill_mstored(signal.SIGKILL)
        t.join(60)
        stack.start_mstored()
        try:
            c.logout()
        except Exception:   # noqa: BLE001 - the session may be gone
            pass
        c2 = stack.imap()
        ok(c2.noop())
        inbox = _message_ids(c2, "INBOX")
        moved = _message_ids(c2, dest)
        outcomes.append((got[0] if got else "no answer", len(inbox),
                         sum(moved.values())))
        lost = [k for k in before if k not in inbox and k not in moved]
        assert not lost, (round_, got, len(lost), lost[:5])
        if got and got[0] == "OK":
            assert inbox == {} and moved == {k: 1 for k in before}, \
                (round_, len(inbox), len(moved))
        for box, ids in (("INBOX", inbox), (dest, moved)):
            view = imap_view(c2, box) if ids else {}
            assert view == stack.store_view("alice", box), (round_, box)
        c2.logout()
    # (the answer, messages left in INBOX, in the new folder) a round
    print("rename outcomes", outcomes)
    problems = [l for l in stack.log_problems()
                if "mstore" not in l and "Internal error" not in l]
    assert not problems, problems


def test_kill_mstored_during_two_way_sync(stack):
    """kill -9 of mstored at a random moment of a two-way `doveadm sync`
    that renumbers UID conflicts (the plugin holds dsync's saves until
    commit, copies by value, and sends an external transaction's
    expunges before the index takes them), then mstored back and the
    sync run again: no message either side ever had is lost, and both
    sides end up the same.  A crash between a copy and its source's
    expunge may leave a copy too many, never none.  Seeded rounds."""
    import random
    import subprocess
    from test_dovecot_migrate import chown_tree, dsync_view
    stack.allow_errors = True   # store unreachable while it restarts
    rnd = random.Random(20261201)
    peer = stack.p("peer")
    os.makedirs(peer)
    chown_tree(peer)
    loc = f"mdbox:{peer}"
    boxes = ("INBOX", "A")
    stack.doveadm("mailbox create", "A", user="alice")
    made = {b: set() for b in boxes}
    for b in boxes:
        for i in range(3):
            stack.deliver("alice", b, MSG.replace(b"hello", b"s%d" % i))
            made[b].add("s%d" % i)
    stack.doveadm("sync", loc, user="alice")

    def sync():
        return subprocess.run(["doveadm", "-c", stack.dconf, "sync", "-u",
                               "alice", loc], capture_output=True,
                              text=True, timeout=120)

    for rnd_no in range(6):
        c = stack.imap()
        for b in boxes:
            s = "store%d" % rnd_no
            stack.deliver("alice", b, MSG.replace(b"hello", s.encode()))
            made[b].add(s)
            ok(c.select(b))
            ok(c.uid("STORE", "1", "FLAGS", "(\\Flagged)" if rnd_no % 2
                     else "()"))
            p = "peer%d" % rnd_no
            r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                                f"mail_location={loc}", "-o",
                                "mail_plugins=", "save", "-u", "alice",
                                "-m", b],
                               input=MSG.replace(b"hello", p.encode()),
                               capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr
            made[b].add(p)
        c.logout()
        proc = subprocess.Popen(["doveadm", "-c", stack.dconf, "sync",
                                 "-u", "alice", loc],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.0, 0.06))
        stack.kill_mstored(signal.SIGKILL)
        proc.wait(timeout=120)
        stack.start_mstored()
        for _ in range(5):
            r = sync()
            if r.returncode == 0:
                break
        assert r.returncode == 0, (rnd_no, r.stderr)
        m = msproto.Client(stack.p("mstored.sock"), user="alice")
        for b in boxes:
            store = dsync_view(stack, None, b)
            assert store == dsync_view(stack, loc, b), (rnd_no, b)
            have = {re.search(rb"Subject: (\S+)",
                              m.fetch_body(b, x["uid"])).group(1).decode()
                    for x in m.fetch_meta(b)}
            assert made[b] <= have, (rnd_no, b, made[b] - have)
            assert len(store) == len(m.fetch_meta(b))
        m.close()
