"""Many IMAP sessions on one mailbox while messages arrive through
mstore-lmtpd and another session sets flags and expunges: no errors, no
Panic/Error/Corrupted in Dovecot's log (the fixture checks), and every
session converges to the store's state."""
import random
import re
import select
import threading
import time

import pytest

from test_dovecot_imap import MSG, fetch_map, ok

SESSIONS = 20
# of which this many IDLE (woken by the store) instead of polling
IDLERS = 4
DELIVERIES = 300


def view(c):
    out = {}
    for uid, line in fetch_map(c, "1:*", "(UID FLAGS)").items():
        f = re.search(rb"FLAGS \(([^)]*)\)", line).group(1).split()
        out[uid] = sorted(x for x in f if x != b"\\Recent")
    return out


@pytest.mark.dovecot(lmtpd=True)
def test_many_sessions_converge(stack):
    errors = []
    stop = threading.Event()
    readers = [stack.imap() for _ in range(SESSIONS)]
    for c in readers:
        ok(c.select("INBOX"))

    def reader(c):
        try:
            while not stop.is_set():
                ok(c.noop())
                # UID FETCH: 1:* is valid on an empty mailbox too
                ok(c.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE)"))
                time.sleep(random.random() * 0.05)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(("reader", repr(e)))

    def idler(c):
        """IDLE for a moment, DONE, check the tagged OK; again."""
        try:
            while not stop.is_set():
                tag = c._new_tag()
                c.send(tag + b" IDLE\r\n")
                assert c.readline().startswith(b"+"), "no IDLE continuation"
                end = time.time() + random.random() * 0.5
                while time.time() < end:
                    r, _, _ = select.select([c.sock], [], [],
                                            max(0, end - time.time()))
                    if r:
                        line = c.readline()
                        assert line.startswith(b"* "), line
                c.send(b"DONE\r\n")
                line = c.readline()
                while not line.startswith(tag):
                    assert line.startswith(b"* "), line
                    line = c.readline()
                assert line.startswith(tag + b" OK"), line
        except Exception as e:   # noqa: BLE001
            errors.append(("idler", repr(e)))

    def deliverer():
        try:
            for i in range(DELIVERIES):
                stack.lmtpd_deliver("alice@example.test",
                                    MSG.replace(b"hello", b"hello %d" % i))
                # spread over some seconds, so that flag changes and
                # expunges interleave with the deliveries
                time.sleep(random.random() * 0.04)
        except Exception as e:   # noqa: BLE001
            errors.append(("deliver", repr(e)))

    done = {"stores": 0, "expunges": 0}

    def changer():
        try:
            c = stack.imap()
            ok(c.select("INBOX"))
            while not stop.is_set():
                ok(c.noop())
                us = [int(x) for x in ok(c.uid("SEARCH", None,
                                               "ALL"))[0].split()]
                if us:
                    u = random.choice(us)
                    ok(c.uid("STORE", str(u), "+FLAGS", r"(\Seen $K)"))
                    done["stores"] += 1
                    if random.random() < 0.3:
                        ok(c.uid("STORE", str(u), "+FLAGS", r"(\Deleted)"))
                        ok(c.expunge())
                        done["expunges"] += 1
                time.sleep(0.02)
            c.logout()
        except Exception as e:   # noqa: BLE001
            errors.append(("changer", repr(e)))

    threads = [threading.Thread(target=idler if i < IDLERS else reader,
                                args=(c,))
               for i, c in enumerate(readers)]
    threads.append(threading.Thread(target=changer))
    for t in threads:
        t.start()
    d = threading.Thread(target=deliverer)
    d.start()
    d.join(timeout=300)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # the changer really raced the deliveries
    assert done["stores"] >= 50 and done["expunges"] >= 10, done

    # the truth: the store, read through a brand-new index
    truth = {u: [f.encode() for f in fl]
             for u, fl in stack.store_view("alice", "INBOX").items()}
    assert len(truth) > DELIVERIES // 2, truth
    for c in readers:
        ok(c.noop())
        assert view(c) == truth
        c.logout()
