"""Dovecot's trash plugin over mstore, with the quota plugin's count
backend: a save that would pass the quota expunges the oldest mail of
Trash first, as often as it takes; with Trash empty the save is refused
(NO [OVERQUOTA]) and nothing is written.  And Dovecot's autoexpunge,
the other way folders are kept small.  Every step is checked in the
store."""
import re

import pytest

import msproto
from test_dovecot_imap import MSG, ok, raw


def subjects(m, box):
    return [re.search(rb"Subject: (\S+)", m.fetch_body(box, r["uid"]))
            .group(1).decode() for r in m.fetch_meta(box)]


def msg(s):
    return MSG.replace(b"hello", s.encode())


@pytest.mark.dovecot(trash=True, quota="*:storage=1G:messages=5")
def test_trash_makes_room_over_quota(stack):
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Trash"))
    for s in ("i0", "i1", "i2"):
        ok(c.append("INBOX", None, None, msg(s)))
    for s in ("t0", "t1"):
        ok(c.append("Trash", None, None, msg(s)))
    # at the quota: each APPEND takes the oldest of Trash
    ok(c.append("INBOX", None, None, msg("i3")))
    assert subjects(m, "Trash") == ["t1"]
    ok(c.append("INBOX", None, None, msg("i4")))
    assert subjects(m, "Trash") == []
    assert subjects(m, "INBOX") == ["i0", "i1", "i2", "i3", "i4"]
    # Trash empty: refused, nothing written
    typ, data = c.append("INBOX", None, None, msg("i5"))
    assert typ == "NO" and b"OVERQUOTA" in data[0], (typ, data)
    assert subjects(m, "INBOX") == ["i0", "i1", "i2", "i3", "i4"]
    # a MOVE into Trash changes no count; a COPY then needs room, and
    # Trash gives it
    ok(c.select("INBOX"))
    line, _ = raw(c, "UID MOVE 1 Trash")
    assert b" OK " in line, line
    assert subjects(m, "Trash") == ["i0"]
    line, _ = raw(c, "UID COPY 2 INBOX")
    assert b" OK " in line, line
    assert subjects(m, "Trash") == []
    assert subjects(m, "INBOX") == ["i1", "i2", "i3", "i4", "i1"]
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK" and b"MESSAGE 5 5" in data[1][0], data
    c.logout()
    m.close()


@pytest.mark.dovecot(dovecot_conf="""
namespace inbox {
  mailbox Trash {
    autoexpunge_max_mails = 3
  }
  mailbox Junk {
    autoexpunge = 1s
  }
}
""")
def test_autoexpunge(stack):
    """Dovecot's autoexpunge of a folder's oldest mail, by count
    (autoexpunge_max_mails) and by the save date the store keeps
    (autoexpunge), done at the end of a session: the store loses the
    oldest of Trash beyond three and Junk's mail once older than 1 s,
    and nothing else."""
    import time
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Trash"))
    ok(c.create("Junk"))
    for i in range(5):
        ok(c.append("Trash", None, None, msg("t%d" % i)))
    ok(c.append("Junk", None, None, msg("j")))
    ok(c.append("INBOX", None, None, msg("i")))
    c.logout()
    time.sleep(2.5)
    c = stack.imap()
    ok(c.noop())
    c.logout()
    deadline = time.time() + 10
    while time.time() < deadline and (len(m.fetch_meta("Trash")) > 3 or
                                      m.fetch_meta("Junk")):
        time.sleep(0.1)
    assert subjects(m, "Trash") == ["t2", "t3", "t4"]
    assert subjects(m, "Junk") == []
    assert subjects(m, "INBOX") == ["i"]
    m.close()
