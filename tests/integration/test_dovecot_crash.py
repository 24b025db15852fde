"""Crashes: kill -9 of the imap process during APPENDs, and of mstored
during STORE/EXPUNGE.  Afterwards the store and what IMAP shows agree,
and no acknowledged APPEND or flag change is lost."""
import os
import re
import signal
import threading
import time

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
