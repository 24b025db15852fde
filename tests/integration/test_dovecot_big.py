"""A 50 MiB message through Dovecot on the mstore storage: IMAP APPEND,
then FETCH back byte for byte (BODY.PEEK[], RFC822.SIZE, a partial
fetch from its middle), and POP3 LIST/RETR with the exact size, each in
sane time.  The store's default max_frame (64 MiB) bounds a message;
the plugin holds it in memory once while saving or reading it."""
import hashlib
import poplib
import re
import time

from test_dovecot_imap import ok

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
