"""Dovecot's full-text search (fts + fts_xapian, Debian
dovecot-fts-xapian) over the mstore storage.  SEARCH BODY/TEXT is
answered from the xapian index (fts_enforced = yes), which lives next
to Dovecot's index cache (~/mstore/xapian-indexes):
  - mail saved through Dovecot (IMAP APPEND) is indexed by
    fts_autoindex, without any search;
  - mail delivered by mstore-lmtpd never passes through Dovecot: it is
    indexed at the next SEARCH (the fts plugin sees the index lagging
    behind the mailbox and has the indexer catch up first) or by
    `doveadm index`; with [lmtp] dovecot_indexer, mstore-lmtpd queues
    the folders with Dovecot's indexer and it is indexed as it arrives;
  - a search from the index reads no body from the store (counted with
    mstored's ops.requests);
  - expunged mail is not found, and a lost index directory is rebuilt
    at the next search."""
import base64
import codecs
import glob
import os
import shutil
import time

import pytest

from test_dovecot_imap import ok, uids


def body_msg(n, word, subject="note"):
    return (b"From: sender@example.test\r\nTo: alice@example.test\r\n"
            b"Subject: " + subject.encode() + b" %d\r\n"
            b"Message-ID: <fts%d@example.test>\r\n\r\n" % (n, n) +
            b"Some common text, then " + word.encode() + b" and more.\r\n")


def fts_lookup(stack, mailbox, *query, user="alice"):
    """UIDs the FTS backend itself returns (no mail is opened).  A
    folder's xapian database is made by its first indexing: a lookup
    before that finds nothing, and fts-xapian logs it as an error
    ("Can not open RO index ... DatabaseNotFoundError"), which is the one
    error taken here as "nothing indexed yet"."""
    r = stack.doveadm("fts lookup", "mailbox", mailbox, *query,
                      user=user, check=False)
    errors = [ln for ln in r.stderr.splitlines()
              if "Error:" in ln or "Panic:" in ln]
    if r.returncode == 0 and errors and all(
            "Can not open RO index" in ln and "DatabaseNotFoundError" in ln
            for ln in errors):
        return []
    if r.returncode != 0 or errors:
        raise AssertionError(f"doveadm fts lookup {query}: {r.returncode} "
                             f"{r.stdout} {r.stderr}")
    out = r.stdout.strip()
    # "INBOX: 3,5" or "INBOX: 2:4" or "INBOX: no results"
    val = out.split(": ", 1)[1]
    if val == "no results":
        return []
    res = []
    for part in val.split(","):
        a, _, b = part.partition(":")
        res.extend(range(int(a), int(b or a) + 1))
    return res


def store_requests(stack):
    for line in stack.mstore("stats").stdout.decode().splitlines():
        if line.startswith("ops.requests "):
            return int(line.split()[1])
    raise AssertionError("no ops.requests in mstore stats")


def search(c, *crit):
    return [int(x) for x in ok(c.uid("SEARCH", None, *crit))[0].split()]


def wait_indexed(stack, mailbox, word, want, timeout=20, user="alice"):
    end = time.time() + timeout
    while time.time() < end:
        got = fts_lookup(stack, mailbox, "body", word, user=user)
        if got == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"{word}: index has {got}, want {want}")


@pytest.mark.dovecot(fts=True, lmtpd=True)
def test_fts_index_follows_every_path(stack):
    c = stack.imap()
    ok(c.select("INBOX"))
    # 1. saved through Dovecot: fts_autoindex indexes it, no search
    for i in range(1, 4):
        ok(c.append("INBOX", None, None, body_msg(i, f"appendword{i}")))
    # the indexer indexes up to the last UID: once the last append is
    # in, nothing is queued that could take the deliveries below along
    wait_indexed(stack, "INBOX", "appendword3", [3])
    assert fts_lookup(stack, "INBOX", "body", "appendword1") == [1]
    dbs = glob.glob(os.path.join(stack.index_dir("alice"),
                                 "xapian-indexes", "db_*"))
    assert dbs, os.listdir(stack.index_dir("alice"))

    # 2. delivered by mstore-lmtpd, not through Dovecot: not indexed ...
    n = 30
    for i in range(n):
        stack.lmtpd_deliver("alice@example.test",
                            body_msg(10 + i, f"lmtpword{i}"))
    assert fts_lookup(stack, "INBOX", "body", "lmtpword5") == []
    # ... until the next search, which has the indexer catch up first
    ok(c.noop())
    assert search(c, "BODY", "lmtpword5") == [4 + 5]
    assert fts_lookup(stack, "INBOX", "body", "lmtpword29") == [4 + 29]

    # 3. the index answers: no body is read from the store (one request
    #    at most per command: its sync), though 33 messages match
    for crit, want in ((("BODY", "lmtpword17"), [4 + 17]),
                       (("TEXT", "common"), list(range(1, 4 + n))),
                       (("BODY", "appendword3"), [3]),
                       (("BODY", "nosuchword"), [])):
        before = store_requests(stack)
        assert search(c, *crit) == want, crit
        used = store_requests(stack) - before - 1   # - the STATUS itself
        assert used <= 2, (crit, used)
    # a word only in the body: BODY/TEXT find it, SUBJECT does not; a
    # word only in the Subject: TEXT finds it, BODY does not
    assert search(c, "BODY", "lmtpword3") == [7]
    assert search(c, "SUBJECT", "lmtpword3") == []
    assert search(c, "BODY", "note") == []
    assert len(search(c, "TEXT", "note")) == 3 + n

    # 4. doveadm index brings mail of mstore-lmtpd in without a search
    stack.lmtpd_deliver("alice@example.test", body_msg(99, "lateword"))
    assert fts_lookup(stack, "INBOX", "body", "lateword") == []
    stack.doveadm("index", "INBOX", user="alice")
    assert fts_lookup(stack, "INBOX", "body", "lateword") == [4 + n]

    # 5. expunged mail is not found: expunged through IMAP (the fts
    #    plugin drops it from the index), and by another client of the
    #    store (doveadm on its own index directory: this xapian index
    #    still has the UID, which the search drops)
    ok(c.uid("STORE", "2", "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    assert search(c, "BODY", "appendword2") == []
    stack.doveadm_fresh("expunge", "mailbox", "INBOX", "uid", 9,
                        user="alice")
    assert fts_lookup(stack, "INBOX", "body", "lmtpword5") == [9]
    ok(c.noop())
    assert 9 not in uids(c)
    assert search(c, "BODY", "lmtpword5") == []
    assert search(c, "BODY", "lmtpword6") == [10]
    c.logout()

    # 6. the index directory lost (no session running): rebuilt at the
    #    next search, same answers
    for _ in range(100):
        if not stack.imap_pids("imap") and not stack.imap_pids(
                "indexer-worker"):
            break
        time.sleep(0.1)
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    ok(c.select("INBOX"))
    assert search(c, "BODY", "lmtpword17") == [4 + 17]
    assert search(c, "BODY", "lateword") == [4 + n]
    assert search(c, "BODY", "appendword2") == []
    c.logout()


@pytest.mark.dovecot(fts=True, lmtpd=True, lmtpd_indexer=True)
def test_fts_lmtpd_mail_indexed_on_arrival(stack):
    """With [lmtp] dovecot_indexer, mstore-lmtpd queues each folder that
    got mail with Dovecot's indexer: mail it delivers is in the FTS
    index as it arrives, with no search, no IMAP session and no
    doveadm index (test_fts_index_follows_every_path shows that without
    it nothing is indexed until a search)."""
    c = stack.imap()
    ok(c.create("Work"))
    ok(c.create("Work/2026"))
    c.logout()
    # settle: the indexer-worker of the CREATEs is done
    for _ in range(100):
        if not stack.imap_pids("imap"):
            break
        time.sleep(0.1)
    n = 20
    for i in range(n):
        stack.lmtpd_deliver("alice@example.test",
                            body_msg(i, f"arriveword{i:02d}q"))
    stack.lmtpd_deliver("alice+Work/2026@example.test",
                        body_msg(100, "folderword"))
    stack.lmtpd_deliver("bob@example.test", body_msg(200, "bobword"))
    assert not stack.imap_pids("imap")
    wait_indexed(stack, "INBOX", f"arriveword{n - 1:02d}q", [n])
    wait_indexed(stack, "Work/2026", "folderword", [1])
    wait_indexed(stack, "INBOX", "bobword", [1], user="bob")
    for i in range(n):
        word = f"arriveword{i:02d}q"
        assert fts_lookup(stack, "INBOX", "body", word) == [i + 1]
    # later mail too, in a folder already indexed
    stack.lmtpd_deliver("alice@example.test", body_msg(300, "laterword"))
    wait_indexed(stack, "INBOX", "laterword", [n + 1])
    # and a search answers from the index
    c = stack.imap()
    ok(c.select("INBOX"))
    assert search(c, "BODY", "arriveword07q") == [8]
    c.logout()
    log = open(stack.p("lmtpd.log"), errors="replace").read()
    assert "event=indexer.unreachable" not in log, log[-2000:]


def attachment_msg(n, word, ctype, filename):
    """A message whose only copy of word is in an attachment, ROT13'd
    and base64'd (the decoder of the stack's fts_decoder undoes ROT13)."""
    data = base64.encodebytes(
        codecs.encode(f"the attachment says {word} here\n",
                      "rot13").encode())
    return (b"From: sender@example.test\r\nTo: alice@example.test\r\n"
            b"Subject: attached %d\r\n"
            b"Message-ID: <att%d@example.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
            b"--b\r\nContent-Type: %s; name=\"%s\"\r\n"
            b"Content-Disposition: attachment; filename=\"%s\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" %
            (n, n, ctype.encode(), filename.encode(), filename.encode()) +
            data.replace(b"\n", b"\r\n") + b"--b--\r\n")


@pytest.mark.dovecot(fts=True, fts_decoder=True, lmtpd=True)
def test_fts_attachments_through_the_decoder(stack):
    """Dovecot's attachment decoding (fts_decoder, a script service)
    over mstore bodies: an attachment of a type the decoder takes, by
    its content type or by its file name's extension, is indexed as the
    decoder's text, for mail saved through Dovecot and for mail of
    mstore-lmtpd; one the decoder does not take is not indexed."""
    c = stack.imap()
    ok(c.select("INBOX"))
    ok(c.append("INBOX", None, None, attachment_msg(
        1, "decodedalpha", "application/x-mstore-rot13", "a.bin")))
    ok(c.append("INBOX", None, None, attachment_msg(
        2, "decodedbeta", "application/octet-stream", "report.rot13")))
    ok(c.append("INBOX", None, None, attachment_msg(
        3, "decodedgamma", "application/octet-stream", "other.bin")))
    wait_indexed(stack, "INBOX", "decodedbeta", [2])
    stack.lmtpd_deliver("alice@example.test", attachment_msg(
        4, "decodeddelta", "application/x-mstore-rot13", "d.bin"))
    ok(c.noop())
    assert search(c, "BODY", "decodedalpha") == [1]
    assert search(c, "BODY", "decodedbeta") == [2]
    assert search(c, "TEXT", "decodeddelta") == [4]
    # not a type the decoder takes: not indexed
    assert search(c, "BODY", "decodedgamma") == []
    # what is indexed is the decoder's text, not the attachment's
    assert search(c, "BODY", codecs.encode("decodedalpha", "rot13")) == []
    assert search(c, "BODY", "see") == [1, 2, 3, 4]
    c.logout()
