"""A 50 MiB message through Dovecot on the mstore storage: IMAP APPEND,
then FETCH back byte for byte (BODY.PEEK[], RFC822.SIZE, a partial
fetch from its middle), and POP3 LIST/RETR with the exact size, each in
sane time.  The store's default max_frame (64 MiB) bounds a message;
the plugin holds it in memory once while saving or reading it."""
import hashlib
import poplib
import re
import shutil
import time

import pytest

from test_dovecot_imap import ok, raw

poplib._MAXLINE = 1 << 20

SIZE = 50 << 20
# each step must stay well inside this (a loaded 2-core test machine
# does one in a few seconds)
STEP_SECS = 30


def big_message():
    head = (b"From: a@example.test\r\nTo: b@example.test\r\n"
            b"Subject: fifty\r\nMessage-ID: <big@example.test>\r\n\r\n")
    lines = []
    # 1024-byte lines that say where they are, so a chunk out of place
    # or lost shows; the last one pads to SIZE exactly
    n = (SIZE - len(head)) // 1024
    for i in range(n):
        tag = b"%010d " % i
        lines.append(tag + b"abcdefghijklmnopqrstuvwxyz0123456789" * 28 +
                     b"." * (1022 - len(tag) - 36 * 28) + b"\r\n")
    rest = SIZE - len(head) - 1024 * n
    body = b"".join(lines) + (b"z" * (rest - 2) + b"\r\n" if rest else b"")
    msg = head + body
    assert len(msg) == SIZE
    return msg


def timed(what, fn, *args):
    t = time.time()
    r = fn(*args)
    took = time.time() - t
    print(f"{what} {took:.2f}s")
    assert took < STEP_SECS, f"{what} took {took:.1f}s"
    return r


def test_fifty_mib_message(stack):
    msg = big_message()
    digest = hashlib.sha256(msg).hexdigest()
    c = stack.imap()
    typ, data = timed("APPEND", c.append, "INBOX", None, None, msg)
    assert typ == "OK", data
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    uid = m.group(2).decode()
    ok(c.select("INBOX"))
    r = ok(timed("FETCH", c.uid, "FETCH", uid,
                 "(RFC822.SIZE BODY.PEEK[])"))
    assert int(re.search(rb"RFC822.SIZE (\d+)", r[0][0]).group(1)) == SIZE
    assert len(r[0][1]) == SIZE
    assert hashlib.sha256(r[0][1]).hexdigest() == digest
    # a partial fetch from the middle (a second read of the body)
    off = 30 << 20
    r = ok(c.uid("FETCH", uid, f"(BODY.PEEK[]<{off}.100000>)"))
    assert r[0][1] == msg[off:off + 100000]
    # past the store's frame (64 MiB): refused as too large, nothing
    # stored, the session goes on
    typ, data = c.append("INBOX", None, None,
                         b"Subject: too big\r\n\r\n" + b"y" * (64 << 20))
    assert typ == "NO" and b"too large" in data[0], (typ, data)
    ok(c.noop())
    assert ok(c.uid("SEARCH", None, "ALL")) == [uid.encode()]
    c.logout()

    p = stack.pop3()
    count, total = p.stat()
    assert (count, total) == (1, SIZE)
    assert p.list(1).split()[2] == str(SIZE).encode()
    resp, lines, octets = timed("RETR", p.retr, 1)
    data = b"".join(l + b"\r\n" for l in lines)
    assert len(data) == SIZE
    assert hashlib.sha256(data).hexdigest() == digest
    p.quit()
    # the store has it at that size too
    out = stack.doveadm_fresh("fetch", "size.physical size.virtual",
                              "mailbox", "INBOX", "all", user="alice")
    assert f"size.physical={SIZE}" in out and f"size.virtual={SIZE}" in out


def _ops(stack, *names):
    stats = dict(l.split() for l in stack.mstore("stats").stdout.decode()
                 .splitlines() if " " in l)
    return [int(stats.get("ops.op." + n, "0")) for n in names]


@pytest.mark.dovecot(quota=None)
def test_half_million_message_folder(stack):
    """A folder of 2**19 (524,288) messages, grown from one by doubling:
    COPY 1:* to another folder (one store request, one durable write for
    all of them) and MOVE 1:* back (Dovecot commits a MOVE every 1000
    messages: one COPY request each, and the expunges one EXPUNGE per
    sync).  Each sync brings the new half into the session's index.
    Then the index is deleted, and the first SELECT reads every
    message's metadata from the store: in sane time, within Dovecot's
    default vsz_limit (256M; the plugin used to hold the messages on
    Dovecot's data stack, whose doubling blocks went past it)."""
    msg = (b"From: a@example.test\r\nSubject: many\r\n"
           b"Message-ID: <many@example.test>\r\n\r\nOne of many.\r\n")
    stack.deliver("alice", "INBOX", msg)
    c = stack.imap()
    ok(c.create("Half"))
    n = 1
    for _ in range(19):
        ok(c.select("INBOX"))
        copies, expunges = _ops(stack, "copy", "expunge")
        line, _ = raw(c, "UID COPY 1:* Half")
        assert b" OK [COPYUID" in line, line
        assert _ops(stack, "copy", "expunge") == [copies + 1, expunges]
        ok(c.select("Half"))
        copies, expunges = _ops(stack, "copy", "expunge")
        line, _ = timed("MOVE of %d" % n, raw, c, "UID MOVE 1:* INBOX")
        assert b" OK" in line, line
        moved = _ops(stack, "copy", "expunge")
        assert moved[0] - copies == (n + 999) // 1000, (n, moved, copies)
        assert 1 <= moved[1] - expunges <= (n + 999) // 1000 + 2, \
            (n, moved, expunges)
        n *= 2
    ok(c.select("INBOX"))
    assert int(c.untagged_responses["EXISTS"][-1]) == n
    c.logout()
    assert n == 1 << 19
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    typ, data = timed("first SELECT of %d" % n, c.select, "INBOX")
    assert typ == "OK" and int(data[0]) == n, (typ, data)
    d = ok(c.fetch("%d" % n, "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
                   "(SUBJECT)])"))
    assert b"RFC822.SIZE %d" % len(msg) in d[0][0], d
    assert d[0][1].strip() == b"Subject: many", d
    c.logout()
