"""Dovecot's own LMTP with Sieve (Pigeonhole, Debian dovecot-sieve)
delivering into the store through the mstore plugin: a real script with
fileinto, addflag (imap4flags), fileinto :flags, keep, discard and
fileinto :create of a new folder.  Each message goes in over LMTP
(smtplib); the result is checked over IMAP and in the store itself (a
brand-new index, so what it shows comes from mstored)."""
import re

import pytest

from test_dovecot_imap import ok

SCRIPT = r"""require ["fileinto", "imap4flags", "mailbox"];
if header :contains "subject" "[work]" {
  addflag "\\Flagged";
  addflag "$Work";
  fileinto "Work";
  stop;
}
if header :contains "subject" "[spam]" {
  discard;
  stop;
}
if header :contains "subject" "[list]" {
  fileinto :create "Lists/Dovecot";
  stop;
}
if header :contains "subject" "[both]" {
  fileinto :flags "\\Seen" "Work";
  keep;
  stop;
}
keep;
"""


def msg(subject, n):
    return (b"From: sender@example.test\r\nTo: alice@example.test\r\n"
            b"Subject: " + subject.encode() + b"\r\n"
            b"Message-ID: <%d@example.test>\r\n\r\n" % n +
            b"Body number %d.\r\n" % n)


def subjects_and_flags(c, mailbox):
    """[(subject, sorted flags without \\Recent)] in UID order."""
    ok(c.select(mailbox, readonly=True))
    out = []
    for d in ok(c.uid("FETCH", "1:*",
                      "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")):
        if not isinstance(d, tuple):
            continue
        flags = re.search(rb"FLAGS \(([^)]*)\)", d[0]).group(1).split()
        subj = d[1].decode().strip().split(": ", 1)[1]
        out.append((subj, sorted(f.decode() for f in flags
                                 if f != b"\\Recent")))
    return out


@pytest.mark.dovecot(sieve=True)
def test_sieve_delivery(stack):
    stack.set_sieve("alice", SCRIPT)
    c = stack.imap()
    ok(c.create("Work"))
    sent = [("[work] report", 1), ("[spam] buy now", 2),
            ("[list] digest", 3), ("[both] minutes", 4),
            ("plain hello", 5)]
    for subject, n in sent:
        replies = stack.lmtp_send("sender@example.test",
                                  ["alice@example.test"], msg(subject, n))
        assert [r[0] for r in replies] == [250], (subject, replies)

    # over IMAP: fileinto :create made the folder (and its parent)
    names = [l.decode() for l in ok(c.list())]
    assert any(n.endswith('"/" Lists/Dovecot') for n in names), names
    want = {
        "INBOX": [("[both] minutes", []), ("plain hello", [])],
        "Work": [("[work] report", ["$Work", "\\Flagged"]),
                 ("[both] minutes", ["\\Seen"])],
        "Lists/Dovecot": [("[list] digest", [])],
    }
    for mailbox, expect in want.items():
        assert subjects_and_flags(c, mailbox) == expect, mailbox
    # the discarded message is nowhere
    for mailbox in want:
        ok(c.select(mailbox, readonly=True))
        assert ok(c.search(None, "SUBJECT", "[spam]")) == [b""]
    # bodies arrived whole (after the trace headers LMTP adds)
    ok(c.select("Work", readonly=True))
    r = ok(c.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[])"))
    body = r[0][1]
    assert body.startswith(b"Return-Path: <sender@example.test>\r\n")
    assert body.endswith(msg("[work] report", 1))
    assert int(re.search(rb"RFC822.SIZE (\d+)", r[0][0]).group(1)) == \
        len(body)
    c.logout()

    # the store: same messages and flags, read through a new index
    assert stack.store_view("alice", "Work") == {
        1: ["$Work", "\\Flagged"], 2: ["\\Seen"]}
    assert stack.store_view("alice", "INBOX") == {1: [], 2: []}
    assert stack.store_view("alice", "Lists/Dovecot") == {1: []}

    # nothing failed in the script (Sieve logs its own errors here)
    log = stack.home("alice") + "/.dovecot.sieve.log"
    try:
        text = open(log).read()
    except FileNotFoundError:
        text = ""
    assert "error" not in text, text


@pytest.mark.dovecot(sieve=True)
def test_sieve_two_recipients_and_a_session(stack):
    """One LMTP transaction to two users with different scripts, while
    alice has INBOX selected: her session sees the delivery at its next
    NOOP, bob's copy (filed by his script) is a separate message."""
    stack.set_sieve("alice", 'keep;\n')
    stack.set_sieve("bob", 'require ["fileinto", "mailbox", '
                    '"imap4flags"];\n'
                    'fileinto :create :flags "\\\\Answered" "Filed";\n')
    a = stack.imap("alice")
    ok(a.select("INBOX"))
    replies = stack.lmtp_send("sender@example.test",
                              ["alice@example.test", "bob@example.test"],
                              msg("to both", 9))
    assert [r[0] for r in replies] == [250, 250], replies
    ok(a.noop())
    assert ok(a.uid("SEARCH", None, "ALL")) == [b"1"]
    a.logout()
    assert stack.store_view("bob", "Filed") == {1: ["\\Answered"]}
    assert stack.store_view("alice", "INBOX") == {1: []}
    b = stack.imap("bob")
    ok(b.select("Filed", readonly=True))
    assert ok(b.uid("FETCH", "1", "(BODY.PEEK[])"))[0][1].endswith(
        msg("to both", 9))
    b.logout()
