"""POP3 through Dovecot with the mstore plugin (poplib): STAT, LIST,
UIDL, RETR, TOP, DELE; sizes exact, UIDLs stable across sessions and
across the loss of Dovecot's index."""
import poplib
import shutil

poplib._MAXLINE = 1 << 20

MSGS = [b"Subject: one\r\n\r\nfirst\r\n",
        b"Subject: two\n\nbare LF body\nsecond line\n",
        b"Subject: three\r\n\r\n" + b"x" * 100000 + b"\r\n",
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n"]


def retr_bytes(p, n):
    resp, lines, octets = p.retr(n)
    return b"".join(l + b"\r\n" for l in lines), octets


def test_pop3_sizes_uidl_dele(stack):
    for m in MSGS:
        stack.deliver("alice", "INBOX", m)
    p = stack.pop3()
    count, total = p.stat()
    assert count == len(MSGS)
    resp, listing, _ = p.list()
    sizes = {int(a): int(b) for a, b in (l.split() for l in listing)}
    assert sum(sizes.values()) == total
    for n in range(1, count + 1):
        data, octets = retr_bytes(p, n)
        # poplib strips the dot-stuffing; the line ends are CRLF on the
        # wire, so the message is what LIST announced
        assert len(data) == sizes[n], (n, len(data), sizes[n])
        assert data == MSGS[n - 1].replace(b"\r\n", b"\n").replace(
            b"\n", b"\r\n")
    resp, lines, _ = p.top(3, 0)
    assert lines[0] == b"Subject: three"
    resp, uidl, _ = p.uidl()
    uidl1 = [l.split()[1] for l in uidl]
    assert len(set(uidl1)) == len(MSGS)
    p.quit()

    # stable across sessions
    p = stack.pop3()
    assert [l.split()[1] for l in p.uidl()[1]] == uidl1
    p.dele(2)
    p.quit()
    # the store expunged it: IMAP and doveadm see 3 messages
    out = stack.doveadm("mailbox status", "messages", "INBOX",
                        user="alice").stdout
    assert "messages=3" in out
    p = stack.pop3()
    assert [l.split()[1] for l in p.uidl()[1]] == [uidl1[0]] + uidl1[2:]
    p.quit()

    # the index is lost: the UIDLs are the same (UIDs and UIDVALIDITY are
    # the store's)
    shutil.rmtree(stack.index_dir("alice"))
    p = stack.pop3()
    assert [l.split()[1] for l in p.uidl()[1]] == [uidl1[0]] + uidl1[2:]
    count, total = p.stat()
    assert count == 3
    p.quit()


def test_pop3_sees_doveadm_expunge(stack):
    for m in MSGS[:2]:
        stack.deliver("bob", "INBOX", m)
    p = stack.pop3("bob")
    assert p.stat()[0] == 2
    p.quit()
    stack.doveadm("expunge", "mailbox", "INBOX", "uid", "1", user="bob")
    p = stack.pop3("bob")
    assert p.stat()[0] == 1
    data, _ = retr_bytes(p, 1)
    assert b"bare LF body" in data
    p.quit()
