"""Dovecot's virtual folders over mstore folders (the virtual plugin:
virtual/All holds every message of every folder, virtual/Flagged the
flagged ones), and COPY/MOVE within one folder, which a COPY out of a
virtual folder onto its own backend folder is.  What is changed through
them is checked in the store."""
import re

import pytest

import msproto
from test_dovecot_imap import MSG, ok, raw

FLAGGED, DELETED = 1 << 2, 1 << 3


def subjects(c):
    data = ok(c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    return [d[1].strip().decode() for d in data if isinstance(d, tuple)]


def copyuid(c, command):
    """The COPYUID of a UID COPY (in its tagged OK) or UID MOVE (in an
    untagged OK before it, RFC 6851)."""
    line, untagged = raw(c, command)
    assert b" OK " in line, line
    m = re.search(rb"OK \[COPYUID (\d+) (\S+) (\S+)\]",
                  b"".join(untagged) + line)
    assert m, (line, untagged)
    return m.group(2).decode(), m.group(3).decode()


def test_copy_and_move_within_a_folder(stack):
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Work"))
    for i in range(2):
        ok(c.append("Work", None, None, MSG.replace(b"hello", b"w%d" % i)))
    ok(c.select("Work"))
    # a duplicate: a new UID, the same bytes
    assert copyuid(c, "UID COPY 1 Work") == ("1", "3")
    assert [r["uid"] for r in m.fetch_meta("Work")] == [1, 2, 3]
    assert m.fetch_body("Work", 3) == m.fetch_body("Work", 1)
    # a move into the folder itself: a new UID, the old one gone
    assert copyuid(c, "UID MOVE 2 Work") == ("2", "4")
    assert [r["uid"] for r in m.fetch_meta("Work")] == [1, 3, 4]
    ok(c.noop())
    data = ok(c.uid("FETCH", "1:*", "(UID)"))
    assert [int(re.search(rb"UID (\d+)", d).group(1)) for d in data] == \
        [1, 3, 4]
    assert subjects(c) == ["Subject: w0", "Subject: w0", "Subject: w1"]
    c.logout()
    m.close()


@pytest.mark.dovecot(virtual=True)
def test_virtual_folders(stack):
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Work"))
    for i in range(3):
        ok(c.append("INBOX", r"(\Flagged)" if i == 1 else None, None,
                    MSG.replace(b"hello", b"in%d" % i)))
        ok(c.append("Work", None, None, MSG.replace(b"hello", b"work%d" % i)))
    names = b" ".join(ok(c.list()))
    assert b"virtual/All" in names and b"virtual/Flagged" in names
    typ, data = c.select("virtual/All")
    assert typ == "OK" and data == [b"6"], data
    assert sorted(subjects(c)) == sorted(
        ["Subject: in%d" % i for i in range(3)] +
        ["Subject: work%d" % i for i in range(3)])
    # bodies as the store has them
    want = sorted(m.fetch_body(box, u) for box in ("INBOX", "Work")
                  for u in (1, 2, 3))
    data = ok(c.fetch("1:*", "(BODY.PEEK[])"))
    assert sorted(d[1] for d in data if isinstance(d, tuple)) == want
    # SEARCH over the backends
    typ, data = c.search(None, "SUBJECT", "work1")
    assert typ == "OK" and len(data[0].split()) == 1, data
    seq = data[0].decode()
    # a flag set through the virtual folder is the backend message's
    ok(c.store(seq, "+FLAGS", r"(\Flagged)"))
    assert [r["uid"] for r in m.fetch_meta("Work")
            if r["flags"] & FLAGGED] == [2]
    ok(c.select("virtual/Flagged"))
    assert sorted(subjects(c)) == ["Subject: in1", "Subject: work1"]
    # a delivery to a backend shows at the next command
    ok(c.select("virtual/All"))
    stack.deliver("alice", "Work", MSG.replace(b"hello", b"late"))
    ok(c.noop())
    assert "Subject: late" in subjects(c)
    # COPY out of the virtual folder: into a backend folder too (its own
    # messages among them: a copy within one folder)
    typ, data = c.search(None, "ALL")
    n = len(data[0].split())
    ok(c.copy("1:*", "Work"))
    assert len(m.fetch_meta("Work")) == 4 + n
    # EXPUNGE through it expunges in the store
    typ, data = c.search(None, "SUBJECT", "in0")
    ok(c.store(data[0].decode(), "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    assert [r["uid"] for r in m.fetch_meta("INBOX")] == [2, 3]
    c.logout()
    m.close()
