"""Dovecot with the plugin on a standby mstored (the DR site before
mstore promote: every write op answers -EROFS): writes get a clean
`NO [NOPERM] Read-only: ...` and never reach the store.

The first session after the index cache is made used to answer a
failed COPY with `NO [NOPERM] <garbage>`: IMAP's COPY keeps a pointer
to the storage's error string while it commits the source's
transaction, and the plugin had the source mail cache its virtual size
in that transaction; the commit then made Dovecot's list index push and
pop the storage error, which freed the string that COPY sent."""
import os
import re
import shutil
import signal

from test_dovecot_imap import MSG, ok, raw

REASON = b"NO [NOPERM] Read-only: this mail store is a standby (DR site)"


def to_standby(stack):
    """The stack's mstored restarted as `mstored --standby` on the same
    store."""
    stack.kill_mstored(signal.SIGTERM)
    stack.start_mstored(standby=True)
    out = stack.mstore("stats").stdout.decode()
    assert re.search(r"^repl\.standby 1$", out, re.M), out


def counter(stack, name):
    out = stack.mstore("stats").stdout.decode()
    return int(dict(l.split() for l in out.splitlines())[name])


def clean_refusal(line):
    """The tagged reply is the standby's reason, printable ASCII only."""
    assert line.split(b" ", 1)[1].startswith(REASON), line
    assert all(32 <= b < 127 for b in line.rstrip(b"\r\n")), line


def literal(c, command, data):
    """A command ending in a non-synchronizing literal; the tagged line."""
    tag = c._new_tag()
    c.send(tag + b" " + command.encode() + b" {%d+}\r\n" % len(data) +
           data + b"\r\n")
    while True:
        line = c.readline()
        if line.startswith(tag + b" "):
            return line


def test_writes_refused_cleanly_at_a_standby(stack):
    """Several rounds, each with a new index cache (deleted, as at a DR
    site whose Dovecot starts empty) and one with the cache kept: COPY,
    UID COPY, MOVE, UID MOVE (to another folder and to the same one),
    APPEND, a copy between sessions, STORE and flag changes all answer
    the standby's reason as clean text, the standby counts no refused
    request (the plugin refuses before asking), and the store is
    unchanged."""
    stack.mstore("mailbox", "add", "alice", "Archive")
    for i in range(3):
        stack.deliver("alice", "INBOX", MSG.replace(b"hello", b"m%d" % i))
    stack.deliver("alice", "Archive", MSG)
    c = stack.imap()
    ok(c.select("INBOX"))
    ok(c.store("2", "+FLAGS", "\\Flagged"))
    c.logout()
    to_standby(stack)

    for rnd in range(4):
        if rnd != 2:
            # the first session after the index cache is made
            shutil.rmtree(stack.index_dir("alice"), ignore_errors=True)
        c = stack.imap()
        line, _ = raw(c, "SELECT INBOX")
        assert b"[READ-ONLY]" in line, line
        c.state = "SELECTED"
        # (the login's rebinding of a new cache's folders may have been
        # refused; from here on, nothing is)
        errors = counter(stack, "ops.errors")
        for cmd in ("COPY 1 Archive", "UID COPY 1:* Archive",
                    "MOVE 2 Archive", "UID MOVE 1:* Archive",
                    "COPY 1:3 INBOX", "MOVE 3 INBOX", "COPY 1 Archive"):
            line, _ = raw(c, cmd)
            clean_refusal(line)
        for box in ("Archive", "INBOX"):
            clean_refusal(literal(c, f"APPEND {box} (\\Seen)", MSG))
        line, _ = raw(c, "STORE 1 +FLAGS (\\Seen \\Answered)")
        clean_refusal(line)
        line, _ = raw(c, "UID STORE 1:* -FLAGS (\\Flagged)")
        clean_refusal(line)
        line, _ = raw(c, "STORE 1 +FLAGS ($Label1)")
        clean_refusal(line)
        # what the session sees has not changed
        # (and no refused change came back as an untagged FETCH; a new
        # keyword's name does reach the FLAGS list: Dovecot's STORE
        # registers it before the commit is refused)
        line, untagged = raw(c, "FETCH 1:* (UID FLAGS)")
        assert line.split()[1] == b"OK", line
        untagged = [l for l in untagged if b" FETCH " in l]
        assert untagged == [b"* 1 FETCH (UID 1 FLAGS ())\r\n",
                            b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\n",
                            b"* 3 FETCH (UID 3 FLAGS ())\r\n"], untagged
        # the standby was asked for no write: every refusal was the
        # plugin's
        assert counter(stack, "ops.errors") == errors
        c.logout()

    # the store is as it was
    assert sorted(stack.store_view("alice", "INBOX")) == [1, 2, 3]
    assert stack.store_view("alice", "INBOX")[2] == ["\\Flagged"]
    assert sorted(stack.store_view("alice", "Archive")) == [1]
    st = stack.doveadm_fresh("mailbox status", "messages", "INBOX",
                             user="alice")
    assert "messages=3" in st, st


def test_copy_refusal_text_before_standby_known(stack):
    """A session whose first write is a COPY between two folders it has
    not selected READ-ONLY yet (doveadm would do the same): the plugin
    asks the store once whether it is a standby, then refuses."""
    stack.mstore("mailbox", "add", "alice", "Archive")
    stack.deliver("alice", "INBOX", MSG)
    stack.deliver("alice", "Archive", MSG)
    to_standby(stack)
    for _ in range(2):
        shutil.rmtree(stack.index_dir("alice"), ignore_errors=True)
        c = stack.imap()
        ok(c.noop())
        errors = counter(stack, "ops.errors")
        clean_refusal(literal(c, "APPEND Archive", MSG))
        assert counter(stack, "ops.errors") == errors
        line, _ = raw(c, "EXAMINE INBOX")
        assert b"[READ-ONLY]" in line, line
        c.state = "SELECTED"
        clean_refusal(raw(c, "COPY 1 Archive")[0])
        assert counter(stack, "ops.errors") == errors
        c.logout()
    assert sorted(stack.store_view("alice", "Archive")) == [1]
