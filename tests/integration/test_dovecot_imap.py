"""IMAP through Dovecot with the mstore storage plugin (imaplib): every
command group against the store as the truth.  The `stack` fixture
(conftest.py, dovecot_stack.py) runs a private mstored and Dovecot."""
import imaplib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

# commands imaplib does not know (or allows in fewer states)
imaplib.Commands.setdefault("ENABLE", ("AUTH",))
imaplib.Commands.setdefault("MOVE", ("SELECTED",))
imaplib.Commands.setdefault("IDLE", ("SELECTED",))

MSG = (b"From: a@example.test\r\nTo: b@example.test\r\n"
       b"Subject: hello\r\nDate: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
       b"Message-ID: <1@example.test>\r\n\r\nHello, world.\r\n")

MIME = (b"From: a@example.test\r\nSubject: mime\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
        b"--XX\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n"
        b"--XX--\r\n")


def raw(c, command):
    """Send one command line as is; return (tagged line, untagged lines)."""
    tag = c._new_tag()
    c.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    while True:
        line = c.readline()
        if line.startswith(tag + b" "):
            return line, lines
        if not line:
            raise EOFError("the server closed the connection after %r"
                           % (lines[-3:],))
        lines.append(line)


def idle_line(c):
    """The next line an IDLEing session gets that is not Dovecot's
    keepalive ("* OK Still here", sent on its own timer)."""
    line = c.readline()
    while line.startswith(b"* OK Still here"):
        line = c.readline()
    return line


def idle_done(c, tag):
    """End the IDLE begun with tag: DONE, then its tagged OK."""
    c.send(b"DONE\r\n")
    line = c.readline()
    while not line.startswith(tag):
        line = c.readline()
    assert b"OK" in line, line


def ok(res):
    typ, data = res
    assert typ == "OK", data
    return data


def multiappend(c, first, second, flags2=b""):
    """One APPEND of two messages (synchronising literals); the tagged
    line."""
    tag = c._new_tag()
    c.send(tag + b" APPEND INBOX {%d}\r\n" % len(first))
    assert c.readline().startswith(b"+")
    c.send(first + b" " + flags2 + b"{%d}\r\n" % len(second))
    assert c.readline().startswith(b"+")
    c.send(second + b"\r\n")
    line = c.readline()
    while not line.startswith(tag):
        line = c.readline()
    return line


def uids(c, crit="ALL"):
    data = ok(c.uid("SEARCH", None, crit))
    return [int(x) for x in data[0].split()]


def fetch_map(c, seqset, items):
    """uid -> raw FETCH response text (flags etc)."""
    out = {}
    for d in ok(c.uid("FETCH", seqset, items)):
        if isinstance(d, tuple):
            d = d[0]
        if d == b")":
            continue
        m = re.search(rb"UID (\d+)", d)
        if m:
            out[int(m.group(1))] = d
    return out


def test_list_create_rename_delete(stack):
    c = stack.imap()
    for name in ("Work", "Work/Projects", "Work/Projects/2024", "Other"):
        ok(c.create(name))
    # a non-ASCII name, modified UTF-7 on the wire
    ok(c.create("&AMk-t&AOk-"))          # "Été"
    ok(c.subscribe("Work"))
    names = [l.decode() for l in ok(c.list())]
    assert any('"Work/Projects/2024"' in l or " Work/Projects/2024" in l
               for l in names), names
    assert any("&AMk-t&AOk-" in l for l in names)
    lsub = b" ".join(ok(c.lsub()))
    assert b"Work" in lsub and b"Other" not in lsub
    # the store has them, in UTF-8
    st = stack.doveadm("mailbox list", user="alice").stdout.split("\n")
    assert "Été" in st and "Work/Projects/2024" in st
    # SPECIAL-USE (from mailbox { special_use } in dovecot.conf) and
    # LIST-EXTENDED / LIST-STATUS
    ok(c.create("Sent"))
    line, untagged = raw(c, 'LIST (SPECIAL-USE) "" "*"')
    assert b" OK" in line
    assert [u for u in untagged if b"\\Sent" in u and b"Sent" in u], untagged
    assert len(untagged) == 1, untagged
    line, untagged = raw(c, 'LIST (SUBSCRIBED) "" "*"')
    assert b" OK" in line and len(untagged) == 1 and b"Work" in untagged[0]
    stack.deliver("alice", "Other", MSG)
    line, untagged = raw(c, 'LIST "" "O*" RETURN (CHILDREN STATUS '
                         '(MESSAGES UIDNEXT))')
    assert any(b"STATUS" in u and b"MESSAGES 1" in u and b"UIDNEXT 2" in u
               for u in untagged), untagged
    # rename with children
    ok(c.rename("Work", "Job"))
    names = b" ".join(ok(c.list()))
    assert b"Job/Projects/2024" in names and b"Work" not in names
    ok(c.select("Job/Projects/2024"))
    ok(c.close())
    # delete a parent with children: it becomes \NoSelect, the
    # children stay
    ok(c.delete("Job"))
    names = b" ".join(ok(c.list()))
    assert b"Job/Projects" in names
    typ, _ = c.select("Job")
    assert typ == "NO"
    ok(c.delete("Job/Projects/2024"))
    ok(c.delete("Job/Projects"))
    ok(c.delete("Other"))
    names = b" ".join(ok(c.list()))
    assert b"Other" not in names and b"Job/Projects" not in names
    st = stack.doveadm("mailbox list", user="alice").stdout.split("\n")
    assert "Other" not in st
    c.logout()


def test_rename_inbox(stack):
    """RENAME INBOX (RFC 3501): its messages move to a new folder of the
    new name, with their flags and keywords; INBOX stays, empty, and its
    children stay where they are; an open INBOX session sees the
    expunges.  A name that exists (here, or only in the store) is
    refused and nothing moves."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    flags = [None, r"(\Seen)", r"(\Flagged $Work)"]
    for i, f in enumerate(flags):
        ok(c.append("INBOX", f, None, MSG.replace(b"hello", b"in%d" % i)))
    ok(c.create("INBOX/Sub"))
    ok(c.append("INBOX/Sub", None, None, MSG))
    before = [m.fetch_body("INBOX", u) for u in (1, 2, 3)]
    other = stack.imap()
    ok(other.select("INBOX"))
    ok(c.create("Taken"))
    m.mbox_create("StoreOnly")
    for name in ("Taken", "StoreOnly"):
        typ, data = c.rename("INBOX", name)
        assert typ == "NO" and b"ALREADYEXISTS" in data[0], (name, data)
    assert len(m.fetch_meta("INBOX")) == 3
    ok(c.rename("INBOX", "Old"))
    names = b" ".join(ok(c.list()))
    assert b" Old" in names and b" INBOX/Sub" in names
    assert m.fetch_meta("INBOX") == []
    assert [m.fetch_body("Old", u) for u in (1, 2, 3)] == before
    assert len(m.fetch_meta("INBOX/Sub")) == 1
    ok(c.select("Old"))
    data = ok(c.fetch("1:*", "(FLAGS)"))
    assert b"\\Seen" in data[1] and b"\\Flagged" in data[2] and \
        b"$Work" in data[2], data
    # the session that had INBOX open: three expunges at its next command
    typ, data = other.noop()
    assert typ == "OK"
    gone = sorted(other.untagged_responses.get("EXPUNGE"))
    assert gone == [b"1", b"2", b"3"], other.untagged_responses
    # INBOX takes mail again, with the next UID (none is given twice)
    typ, data = c.append("INBOX", None, None, MSG)
    assert typ == "OK" and b"APPENDUID" in data[0] and \
        data[0].split()[2] == b"4]", data
    other.logout()
    c.logout()
    m.close()


def test_append_fetch_everything(stack):
    c = stack.imap()
    ok(c.create("Box"))
    data = ok(c.append("Box", r"(\Seen \Flagged $Label1)",
                       imaplib.Time2Internaldate(1700000000), MSG))
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    assert m, data
    uidv, uid = int(m.group(1)), int(m.group(2))
    ok(c.append("Box", None, None, MIME))
    # 0 bytes: Dovecot's IMAP refuses to save one; the store takes it
    # from a delivery, and IMAP serves it
    typ, _ = c.append("Box", None, None, b"")
    assert typ == "NO"
    stack.deliver("alice", "Box", b"")
    lf = b"Subject: bare lf\n\nline one\nline two\n"
    ok(c.append("Box", None, None, lf))
    typ, data = c.select("Box")
    assert typ == "OK" and data == [b"4"]
    st = c.response("UIDVALIDITY")[1][0]
    assert int(st) == uidv
    d = fetch_map(c, "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    assert b"\\Seen" in d[uid] and b"$Label1" in d[uid]
    assert b"RFC822.SIZE %d" % len(MSG) in d[uid]
    assert b"14-Nov-2023" in d[uid]
    # every FETCH item
    r = ok(c.uid("FETCH", str(uid), "(ENVELOPE BODYSTRUCTURE BODY "
                 "RFC822.HEADER RFC822.TEXT BODY.PEEK[HEADER.FIELDS "
                 "(SUBJECT)] BODY.PEEK[]<0.10> BINARY.PEEK[1] "
                 "BINARY.SIZE[1])"))
    text = b"".join(x if isinstance(x, bytes) else b"".join(x) for x in r)
    assert b"hello" in text and b"Hello, world." in text
    assert b'"a@example.test"' in text or b"example.test" in text
    # the MIME message: sections, BODYSTRUCTURE, BINARY of base64
    mime_uid = uids(c)[1]
    r = ok(c.uid("FETCH", str(mime_uid), "(BODYSTRUCTURE BODY.PEEK[1] "
                 "BINARY.PEEK[2] BODY.PEEK[2.MIME])"))
    text = b"".join(x if isinstance(x, bytes) else b"".join(x) for x in r)
    assert b"Gr\xc3\xbc\xc3\x9fe" in text
    assert bytes(range(10)) in text
    assert b'"mixed"' in text.lower() or b"mixed" in text.lower()
    # 0 bytes and bare LF: RFC822.SIZE equals what BODY[] returns
    for u in uids(c)[2:]:
        r = ok(c.uid("FETCH", str(u), "(RFC822.SIZE BODY.PEEK[])"))
        size = int(re.search(rb"RFC822.SIZE (\d+)", r[0][0]).group(1))
        assert size == len(r[0][1])
    body = ok(c.uid("FETCH", str(uids(c)[3]), "(BODY.PEEK[])"))[0][1]
    assert body == lf.replace(b"\n", b"\r\n")
    # SEARCH / SORT / THREAD
    assert uids(c, "SUBJECT hello") == [uid]
    assert uids(c, "BODY world") == [uid]
    assert uids(c, "KEYWORD $Label1") == [uid]
    assert uids(c, "LARGER 100") == [uid, mime_uid]
    typ, data = c.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")
    assert typ == "OK" and len(data[0].split()) == 4
    typ, data = c.uid("THREAD", "REFERENCES", "UTF-8", "ALL")
    assert typ == "OK"
    c.logout()


def test_store_expunge_condstore(stack):
    c = stack.imap()
    for i in range(5):
        ok(c.append("INBOX", None, None, MSG))
    ok(c._simple_command("ENABLE", "CONDSTORE"))
    ok(c.select("INBOX"))
    ok(c.store("1:2", "+FLAGS", r"(\Deleted)"))
    ok(c.store("3", "+FLAGS", r"(\Answered $Work)"))
    ok(c.store("3", "-FLAGS", r"($Work)"))
    ok(c.store("4", "FLAGS", r"(\Seen \Draft)"))
    # the store has the flags (another process, doveadm, reads them)
    out = stack.doveadm("fetch", "uid flags", "mailbox", "INBOX", "all",
                        user="alice").stdout
    assert out.count("\\Deleted") == 2 and "\\Answered" in out
    assert "$Work" not in out
    ok(c.expunge())
    assert uids(c) == [3, 4, 5]
    # UID EXPUNGE (UIDPLUS)
    ok(c.uid("STORE", "5", "+FLAGS", r"(\Deleted)"))
    ok(c.uid("EXPUNGE", "5"))
    assert uids(c) == [3, 4]
    # CONDSTORE: MODSEQ and UNCHANGEDSINCE
    r = ok(c.uid("FETCH", "3", "(MODSEQ)"))
    ms = int(re.search(rb"MODSEQ \((\d+)\)", r[0]).group(1))
    line, _ = raw(c, "UID STORE 3 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)"
                  % ms)
    assert b" OK" in line and b"MODIFIED" not in line, line
    line, _ = raw(c, "UID STORE 3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % ms)
    assert b" OK [MODIFIED 3]" in line, line
    st = ok(c.status("INBOX", "(MESSAGES UIDNEXT HIGHESTMODSEQ)"))
    assert b"MESSAGES 2" in st[0] and b"UIDNEXT 6" in st[0]
    c.logout()
    # a new session sees the same
    c = stack.imap()
    ok(c.select("INBOX"))
    d = fetch_map(c, "1:*", "(UID FLAGS)")
    assert sorted(d) == [3, 4]
    assert b"\\Flagged" in d[3] and b"\\Seen" not in d[3]
    c.logout()


def test_copy_move(stack):
    c = stack.imap()
    ok(c.create("Dest"))
    for i in range(3):
        ok(c.append("INBOX", r"(\Flagged)", None, MSG))
    ok(c.select("INBOX"))
    line, _ = raw(c, "UID COPY 1:2 Dest")
    m = re.search(rb"OK \[COPYUID (\d+) (\S+) (\S+)\]", line)
    assert m and m.group(2) == b"1:2" and m.group(3) == b"1:2", line
    line, untagged = raw(c, "UID MOVE 3 Dest")
    assert b" OK" in line, line
    assert any(b"COPYUID" in u and b" 3 3" in u for u in untagged), untagged
    assert uids(c) == [1, 2]
    ok(c.select("Dest"))
    d = fetch_map(c, "1:*", "(UID FLAGS RFC822.SIZE)")
    assert sorted(d) == [1, 2, 3]
    assert all(b"\\Flagged" in v for v in d.values())
    body = ok(c.uid("FETCH", "3", "(BODY.PEEK[])"))[0][1]
    assert body == MSG
    # the store shares the body: one body record for all these copies
    stats = dict(l.split() for l in stack.mstore("stats").stdout.decode()
                 .splitlines())
    assert int(stats.get("index.bodies", "1")) <= 2, stats
    c.logout()


def _ops(stack, *names):
    stats = dict(l.split() for l in stack.mstore("stats").stdout.decode()
                 .splitlines() if " " in l)
    return [int(stats.get("ops.op." + n, "0")) for n in names]


def test_copy_move_one_request(stack):
    """A COPY of many messages is one store COPY (one durable write), a
    MOVE one COPY and one EXPUNGE; a source that another client expunged
    in the store meanwhile (this session's index still has it) fails the
    COPY with EXPUNGEISSUED and leaves nothing in the destination."""
    import msproto
    c = stack.imap()
    ok(c.create("Dest"))
    ok(c.create("Back"))
    for i in range(40):
        ok(c.append("INBOX", None, None, MSG))
    ok(c.select("INBOX"))
    before = _ops(stack, "copy", "expunge")
    line, _ = raw(c, "UID COPY 1:40 Dest")
    assert b"OK [COPYUID" in line and b" 1:40 1:40]" in line, line
    assert _ops(stack, "copy", "expunge") == [before[0] + 1, before[1]]
    ok(c.select("Dest"))
    before = _ops(stack, "copy", "expunge")
    line, untagged = raw(c, "UID MOVE 1:40 Back")
    assert b" OK" in line, line
    assert any(b"COPYUID" in u and b" 1:40 1:40" in u for u in untagged)
    assert _ops(stack, "copy", "expunge") == [before[0] + 1, before[1] + 1]
    assert uids(c) == []
    assert sorted(stack.store_view("alice", "Back")) == list(range(1, 41))
    # uid 7 goes in the store itself, unseen by this session
    ok(c.select("INBOX"))
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    m.expunge("INBOX", [(7, 7)])
    m.close()
    line, _ = raw(c, "UID COPY 1:40 Dest")
    assert b"NO [EXPUNGEISSUED]" in line, line
    assert stack.store_view("alice", "Dest") == {}
    ok(c.noop())
    assert 7 not in uids(c)
    line, _ = raw(c, "UID COPY 1:40 Dest")
    assert b"OK [COPYUID" in line, line
    assert len(stack.store_view("alice", "Dest")) == 39
    c.logout()


def test_store_scattered_one_request(stack):
    """A flag or keyword change on a scattered set of messages is one
    store STORE per kind of change (one durable write), not one per run
    of uids: Dovecot's sync hands the runs out one by one, the kinds
    interleaved in uid order.  The store ends with what IMAP shows."""
    c = stack.imap()
    for i in range(60):
        ok(c.append("INBOX", None, None, MSG))
    ok(c.select("INBOX"))
    odd = ",".join(str(u) for u in range(1, 61, 2))
    third = ",".join(str(u) for u in range(1, 61, 3))
    before = _ops(stack, "store")
    ok(c.uid("STORE", odd, "+FLAGS.SILENT", "(\\Flagged $Work)"))
    # one STORE for \Flagged on 30 runs, one for $Work
    assert _ops(stack, "store")[0] - before[0] == 2
    before = _ops(stack, "store")
    # replace on every third: \Seen added to all 20; \Flagged and $Work
    # taken from the odd ones among them
    ok(c.uid("STORE", third, "FLAGS.SILENT", "(\\Seen)"))
    # \\Seen added, the other flags removed, $Work removed: three
    assert _ops(stack, "store")[0] - before[0] == 3
    before = _ops(stack, "store")
    ok(c.uid("STORE", odd, "-FLAGS.SILENT", "($Work)"))
    assert _ops(stack, "store")[0] - before[0] == 1
    want = {}
    for u in range(1, 61):
        f = set()
        if u % 2 == 1:
            f |= {"\\Flagged"}
        if (u - 1) % 3 == 0:
            f = {"\\Seen"}
        want[u] = sorted(f)
    assert stack.store_view("alice", "INBOX") == want
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    shown = {}
    for d in data:
        m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", d)
        shown[int(m.group(1))] = sorted(
            x for x in m.group(2).decode().split() if x != "\\Recent")
    assert shown == want
    c.logout()


def _fetch_flags(c, uids="1:*"):
    """uid -> (sorted flags without \\Recent, MODSEQ) as IMAP shows them."""
    typ, data = c.uid("FETCH", uids, "(FLAGS MODSEQ)")
    out = {}
    for d in data:
        uid = int(re.search(rb"UID (\d+)", d).group(1))
        fl = re.search(rb"FLAGS \(([^)]*)\)", d).group(1).decode().split()
        ms = int(re.search(rb"MODSEQ \((\d+)\)", d).group(1))
        out[uid] = (sorted(x for x in fl if x != "\\Recent"), ms)
    return out


def test_store_echo_not_pulled(stack):
    """After a STORE or EXPUNGE the plugin does not read its own changes
    back from the store when the store's replies show that nothing else
    changed the mailbox since the index last saw it (protocol version 3:
    each reply names the mailbox and its modseq before the change), and
    the command's own sync asks nothing either (version 7: the replies'
    mailbox change counts chain from the index's, which then records the
    last one).  When something else did, the pull brings it in, in the
    same command."""
    import msproto
    c = stack.imap()
    for i in range(30):
        ok(c.append("INBOX", None, None, MSG))
    ok(c.select("INBOX"))
    ok(c.noop())
    odd = ",".join(str(u) for u in range(1, 31, 2))
    before = _ops(stack, "changes", "store")
    ok(c.uid("STORE", odd, "+FLAGS.SILENT", "(\\Flagged)"))
    after = _ops(stack, "changes", "store")
    assert after[1] - before[1] == 1
    # not one for the echo of 15 changes (and the commit asks none
    # before it pushes), nor for the command's own sync: the index has
    # the count of the push
    assert after[0] - before[0] == 0, (before, after)
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    store_hms = m.mbox_status("INBOX")["highestmodseq"]
    shown = _fetch_flags(c)
    for u in range(1, 31):
        assert shown[u][0] == (["\\Flagged"] if u % 2 else []), (u, shown[u])
    # MODSEQs do not go back: a changed message's is at least the store's
    assert max(ms for _, ms in shown.values()) >= store_hms
    # another client changes uid 2 in the store; this session's next
    # STORE (uid 3) sees the chain broken and pulls: uid 2's change
    # comes in with it
    m.store("INBOX", [(2, 2)], 0, 8)  # +\Deleted
    m.close()
    before = _ops(stack, "changes")
    typ, data = c.uid("STORE", "3", "+FLAGS", "(\\Seen)")
    assert typ == "OK", data
    # the pull the broken chain asks for; the command's own sync then
    # asks nothing: the user's change count has not moved since that pull
    # (its own push counted too)
    assert _ops(stack, "changes")[0] - before[0] == 1
    assert any(b"UID 2 " in d and b"\\Deleted" in d for d in data
               if isinstance(d, bytes)), data
    shown = _fetch_flags(c)
    assert shown[2][0] == ["\\Deleted"]
    assert shown[3][0] == ["\\Flagged", "\\Seen"]
    # an EXPUNGE alone: no echo either
    before = _ops(stack, "changes", "expunge")
    typ, data = c.expunge()
    assert typ == "OK", data
    after = _ops(stack, "changes", "expunge")
    assert after[1] - before[1] == 1
    # the command's own sync asks once: the expunge raised Dovecot's
    # HIGHESTMODSEQ past the store's, and the plugin's MBOX_UPDATE that
    # raises the store's to it is a change of the mailbox after the push
    assert after[0] - before[0] == 1, (before, after)
    want = {u: sorted(f) for u, (f, _) in _fetch_flags(c).items()}
    assert 2 not in want
    assert stack.store_view("alice", "INBOX") == want
    c.logout()


def _mail_log(stack, event):
    """{subject: {field: value}} of mail_log's lines for event."""
    out = {}
    path = stack.p("log", "dovecot-info.log")
    for line in open(path, "rb").read().decode(errors="replace").splitlines():
        m = re.search(r": %s: (.*)$" % event, line)
        if not m:
            continue
        fields = dict(re.findall(r"(\w+)=(<[^>]*>|[^,]*)", m.group(1)))
        out[fields.get("subject")] = fields
    return out


@pytest.mark.dovecot(mail_log=True)
def test_saved_mail_read_while_saving(stack):
    """Dovecot's mail_log reads each saved mail's headers and sizes while
    the save is under way, from the buffer the message was saved into
    (handed to the mail's stream, not copied); MULTIAPPEND reuses one
    mail for several messages, each buffer freed as the next comes."""
    bare = (b"From: c@example.test\nSubject: bare\n"
            b"Message-ID: <3@example.test>\n\nline one\nline two\n")
    c = stack.imap()
    line = multiappend(c, MSG, MIME)
    assert b"OK [APPENDUID" in line and b" 1:2]" in line, line
    # as is (imaplib's append would make the LFs CRLF)
    line, _ = raw(c, "APPEND INBOX {%d+}\r\n" % len(bare) +
                  bare.decode() + "")
    assert b" OK" in line, line
    ok(c.create("Dest"))
    ok(c.select("INBOX"))
    ok(c.uid("COPY", "3", "Dest"))
    c.logout()
    saved, copied = {}, {}
    for _ in range(50):
        saved = _mail_log(stack, "save")
        copied = _mail_log(stack, "copy from INBOX")
        if len(saved) == 3 and copied:
            break
        time.sleep(0.1)
    want = {"hello": (MSG, "a@example.test"), "mime": (MIME, "a@example.test"),
            "bare": (bare, "c@example.test")}
    for subject, (body, sender) in want.items():
        f = saved.get(subject)
        assert f is not None, (subject, saved)
        assert f["from"] == sender, f
        assert int(f["size"]) == len(body), f
        # the virtual size counts each bare LF as CRLF
        assert int(f["vsize"]) == len(body) + body.count(b"\n") - \
            body.count(b"\r\n"), f
        assert f["box"] == "INBOX", f
    assert [saved[s]["uid"] for s in ("hello", "mime", "bare")] == \
        ["1", "2", "3"], saved
    assert saved["hello"]["msgid"] == "<1@example.test>", saved
    # a store-side copy: the mail is read back from the store
    f = copied.get("bare")
    assert f is not None and f["box"] == "Dest" and f["uid"] == "1", copied
    assert int(f["size"]) == len(bare), f
    assert f["from"] == "c@example.test", f


def _stats_when(m, done, timeout=10):
    """mstored's STATUS counters (msproto client m) once done(them) is
    true, or the last ones read after timeout seconds: the caller's
    asserts then say what was missing."""
    deadline = time.time() + timeout
    while True:
        s = m.stats()
        if done(s) or time.time() > deadline:
            return s
        time.sleep(0.05)


def _traced(stack, run, calls="open,openat,sendto", paths=False,
            strsize=None):
    """Run run() while the session's one imap process is traced with
    strace (the system calls in calls: opens and store requests unless
    told; with paths, each descriptor followed by its file's path; with
    strsize, that many bytes of each buffer shown, not 32); the trace's
    lines."""
    pids = stack.imap_pids()
    assert len(pids) == 1, pids
    trace = stack.p("log", "imap-%d.strace" % pids[0])
    st = subprocess.Popen(["strace", "-f"] + (["-y"] if paths else []) +
                          (["-s", str(strsize)] if strsize else []) +
                          ["-e", "trace=" + calls,
                           "-o", trace, "-p", str(pids[0])],
                          stderr=subprocess.PIPE)
    try:
        # strace says so once it is attached
        assert b"attached" in st.stderr.readline()
        run()
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=30)
    return open(trace).read().splitlines()


def _cache_opens(lines):
    """In trace order: {mailbox: [(line number, failed)]} for the opens of
    each mailbox's dovecot.index.cache (not of the .tmp file a purge
    writes), and {mailbox: [line number]} where its file was written
    (each purge's .tmp)."""
    opens, made = {}, {}
    for i, l in enumerate(lines):
        m = re.search(r'mailboxes/([^/]+)/mstore-box/dovecot\.index\.cache'
                      r'(\.tmp)?"', l)
        if m is None or "open" not in l:
            continue
        if m.group(2):
            made.setdefault(m.group(1), []).append(i)
        else:
            opens.setdefault(m.group(1), []).append((i, "ENOENT" in l))
    return opens, made


def test_cache_file_made_once_then_never_missed(stack):
    """A mailbox gets its dovecot.index.cache at its first sync that
    changes the index.  Without the file, each of Dovecot's cache lookups
    tried to open it, an open() that failed: per saved message, per size
    or date asked, per body fetched (the NUL state looked up for each).
    The session's imap process is traced with strace: once a mailbox's
    file is made, no open of it fails, and it is written once (made with
    its configured fields as used now: a field written as never used was
    dropped by a second purge at the first read of the header); a new
    session reading 8 bodies opens each file at most once, not once a
    message."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    c = stack.imap()
    ok(c.create("Other"))

    def first():
        for i in range(4):
            ok(c.append("Other", None, None, MSG))
        ok(c.select("INBOX"))
        for i in range(4):
            ok(c.append("INBOX", None, None, MSG))
        ok(c.noop())
        d = fetch_map(c, "1:*", "(UID RFC822.SIZE INTERNALDATE)")
        assert len(d) == 4 and all(b"RFC822.SIZE %d" % len(MSG) in v
                                   for v in d.values()), d
    lines = _traced(stack, first)
    c.logout()
    # the trace saw the session: its store requests, the 8 APPENDs
    # among them
    assert len([l for l in lines if "sendto(" in l]) >= 8, lines
    opens, made = _cache_opens(lines)
    # INBOX's file is made in this session (Other's was at its CREATE),
    # once: written with its configured fields as used now, the first
    # read of its header does not purge it again to drop them
    assert len(made.get("INBOX", [])) == 1, (made, lines)
    assert "Other" not in made, (made, lines)
    for box, seen in opens.items():
        # a failed open only before the file exists: the sync's check
        # and Dovecot's own lookups until that sync
        failed = [i for i, bad in seen if bad]
        assert all(i < made.get(box, [-1])[0] for i in failed), \
            (box, seen, made, [lines[i] for i in failed])

    c = stack.imap()

    def second():
        for box in ("Other", "INBOX"):
            ok(c.select(box))
            bodies = [x[1] for x in ok(c.uid("FETCH", "1:*", "(BODY.PEEK[])"))
                      if isinstance(x, tuple)]
            assert bodies == [MSG] * 4, bodies
    lines = _traced(stack, second)
    c.logout()
    opens, made = _cache_opens(lines)
    assert made == {}, lines
    for box in ("Other", "INBOX"):
        seen = opens.get(box, [])
        assert not any(bad for _, bad in seen), (box, seen)
        assert len(seen) <= 1, (box, seen)

    # a file deleted (as Dovecot deletes a corrupted one) is made again
    # at the next sync that changes the index
    path = os.path.join(stack.home("alice"), "mstore", "mailboxes", "INBOX",
                        "mstore-box", "dovecot.index.cache")
    assert os.path.exists(path)
    os.remove(path)
    c = stack.imap()
    ok(c.select("INBOX"))
    ok(c.store("1", "+FLAGS", "(\\Flagged)"))
    ok(c.noop())
    assert os.path.exists(path)
    c.logout()


def test_body_without_nuls_sent_whole(stack):
    """The plugin holds a message whole when Dovecot reads it and tells
    Dovecot whether it has a NUL byte (Dovecot knows that otherwise only
    from a parse).  A FETCH BODY[] of a message without one then goes to
    the client as stored, in writes as large as the socket takes; not
    knowing, Dovecot copies every literal through its NUL-replacing
    stream, one 8 KiB write to the client each (seen with strace: 128
    of them for 1 MiB).  A message with a NUL still has it replaced by
    0x80 in BODY[] and kept in BINARY[] (a literal8)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    line = b"x" * 1022 + b"\r\n"
    big = b"From: a@example.test\r\nSubject: big\r\n\r\n" + line * 1024
    nul = (b"From: a@example.test\r\nSubject: nul\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\nab\0cd\r\n")
    c = stack.imap()
    ok(c.append("INBOX", None, None, big))
    ok(c.append("INBOX", None, None, nul))
    c.logout()
    c = stack.imap()
    ok(c.select("INBOX"))
    got = {}

    def fetch():
        d = ok(c.fetch("1", "(BODY.PEEK[])"))
        got["big"] = d[0][1]
    lines = _traced(stack, fetch, calls="write,writev,sendmsg")
    assert got["big"] == big
    sizes = [int(m.group(1)) for m in
             (re.search(r"\) = (\d+)$", l) for l in lines) if m]
    assert sum(sizes) >= len(big), sizes
    # the 1 MiB went in large writes, none of Dovecot's 8 KiB blocks
    assert sizes.count(8192) < 8 and len(sizes) < 64, sizes
    d = ok(c.fetch("2", "(BODY.PEEK[] BINARY.PEEK[1])"))
    parts = {}
    for r in d:
        if isinstance(r, tuple):
            parts[b"BINARY" if b"BINARY[1]" in r[0] else b"BODY"] = r[1]
    assert parts[b"BODY"] == nul.replace(b"\0", b"\x80"), d
    assert parts[b"BINARY"] == b"ab\0cd\r\n", d
    c.logout()


def _cache_last_used(path):
    """{field name: (file offset of its last_used, last_used)} from the
    newest field header of a dovecot.index.cache (Dovecot's
    mail-cache-private.h: the header's field_header_offset at byte 28,
    offsets in its 7-bit encoding, each field header next_offset, size,
    fields_count, then last_used[], size[], type[], decision[], names)."""
    import struct
    b = open(path, "rb").read()

    def offset(at):
        x = b[at:at + 4]
        if any(c & 0x80 == 0 for c in x):
            return 0
        return ((x[3] & 0x7f) << 2 | (x[2] & 0x7f) << 9 |
                (x[1] & 0x7f) << 16 | (x[0] & 0x7f) << 23)
    o, nxt = 0, offset(28)
    while nxt:
        o, nxt = nxt, offset(nxt)
    assert o, "no field header"
    n = struct.unpack_from("<I", b, o + 8)[0]
    names = b[o + 12 + 10 * n:].split(b"\0")[:n]
    return {name.decode(): (o + 12 + 4 * i,
                            struct.unpack_from("<I", b, o + 12 + 4 * i)[0])
            for i, name in enumerate(names)}


def test_append_unselected_leaves_cache_file(stack):
    """APPENDs of a session with nothing selected (a client saving to
    Sent) open and close the mailbox each time.  Dovecot registers its
    cache fields again at each open of the index it keeps open and marks
    the forced decisions (mail_never_cache_fields) changed though they
    are not: each close then locked dovecot.index.cache and wrote its
    field header.  The open takes that mark back when the file already
    holds what the write would write: traced, the APPENDs after the
    first two lock and write nothing in the cache file, and its bytes
    stay the same.  A file behind the process's memory (a field's last
    use) is still written at the next APPEND."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    c = stack.imap()
    for _ in range(2):
        ok(c.append("INBOX", None, None, MSG))
    path = os.path.join(stack.home("alice"), "mstore", "mailboxes", "INBOX",
                        "mstore-box", "dovecot.index.cache")
    before = open(path, "rb").read()

    def appends():
        for _ in range(6):
            ok(c.append("INBOX", None, None, MSG))
    lines = _traced(stack, appends, "fcntl,pwrite64,pwritev,write,sendto",
                    paths=True)
    assert len([l for l in lines if "sendto(" in l]) >= 6, lines
    # (this stack's quota plugin still writes dovecot.index.log at each
    # APPEND: Dovecot's vsize header; not the cache file's business)
    cache = [l for l in lines if "dovecot.index.cache>" in l]
    assert cache == [], cache
    assert open(path, "rb").read() == before
    # a header the file has not caught up with is still written: the
    # field "flags" (mail_cache_fields) as if last used never, which
    # the next read would drop with a purge; this process's memory has
    # it used now, and the next open's write puts that back
    at, used = _cache_last_used(path)["flags"]
    assert used != 0
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"\0\0\0\0")
    ok(c.append("INBOX", None, None, MSG))
    assert _cache_last_used(path)["flags"][1] == used
    c.logout()
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"9"]
    c.logout()


def test_append_unselected_stats_folder_twice(stack):
    """A session with nothing selected opens the folder again for each
    APPEND.  An open found the folder's directory by four stat()s: the
    plugin's (is it there?), two of Dovecot's index cache (is an index
    of this directory still open here?) and one for the permissions of
    the folder's name.  An index the cache hands back still open says
    the directory is there with the inode it was opened with, and the
    permissions found at that open hold: traced, each open of the folder
    for an APPEND after the first stats its directory twice, Dovecot's
    two, in a row.  A folder deleted by another session between two
    APPENDs refuses the next with [TRYCREATE] and the store gets no such
    folder; made again, it takes the next APPEND (a new UIDVALIDITY, UID
    1).  (Those two hold with the plugin's existence check skipped
    altogether as well: Dovecot's index cache hands back no index for a
    directory gone, and its open of the index refuses a folder whose
    directory is not there.)"""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    c = stack.imap()
    ok(c.create("Sent"))
    for _ in range(2):
        ok(c.append("Sent", None, None, MSG))

    def appends():
        for _ in range(6):
            ok(c.append("Sent", None, None, MSG))
    lines = _traced(stack, appends, "stat,lstat,newfstatat,statx,sendto",
                    strsize=64)
    # the trace saw the six APPENDs (the store's APPEND request holds
    # the message)
    assert len([l for l in lines if "sendto(" in l and
                "From: a@example.test" in l]) == 6, lines
    # each open of the folder: Dovecot's two stat()s of its directory,
    # in a row (this stack's quota plugin opens it a second time for
    # each APPEND); none of the name's directory for the permissions
    runs, n = [], 0
    for l in lines + [""]:
        if re.search(r'stat[^"]*"[^"]*/mailboxes/Sent/mstore-box"', l):
            n += 1
        elif n:
            runs, n = runs + [n], 0
    assert len(runs) >= 6 and set(runs) == {2}, (runs, lines)
    assert not [l for l in lines if '/mailboxes/Sent"' in l], lines
    uidv = int(re.search(rb"UIDVALIDITY (\d+)",
                         ok(c.status("Sent", "(UIDVALIDITY)"))[0]).group(1))

    # deleted by another session: refused, and nothing is made
    d = stack.imap()
    ok(d.delete("Sent"))
    typ, data = c.append("Sent", None, None, MSG)
    assert typ == "NO" and b"[TRYCREATE]" in data[0], (typ, data)
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    with pytest.raises(msproto.Error):
        m.mbox_status("Sent")
    # made again: the APPEND goes into the new folder
    ok(d.create("Sent"))
    d.logout()
    typ, data = c.append("Sent", None, None, MSG)
    assert typ == "OK", (typ, data)
    got = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    assert got and int(got.group(1)) != uidv and got.group(2) == b"1", data
    assert c.select("Sent")[1] == [b"1"]
    c.logout()


@pytest.mark.dovecot(users=("alice", "bob", "carol", "dave"),
                     user_fields={"carol": "userdb_mail=maildir:~/Maildir",
                                  "dave": "userdb_mail=mstore:~/mstore:"
                                          "NOSUCHKEY=1"})
def test_login_connection_per_mstore_user(stack):
    """The plugin connects to the store when Dovecot makes the mail user,
    before it answers LOGIN (docs/dovecot-plugin.md, "At login"), and
    the storage takes that connection.  Counted by mstored: one HELLO
    per session of an mstore user, whether it does anything or not.  A
    user whose mail is not in the store (a userdb mail= override, a site
    moving users in) gets no connection at all, and their mail works.
    Dovecot's LMTP process outlives its deliveries: after one
    transaction to an mstore user and to that other user, it holds no
    connection to the store (the user's goes with the user).  Nor after
    a user whose mail location Dovecot refuses (a typo in one user's
    userdb mail=): the connection made with the user, which no storage
    took, is closed with it."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="bob")

    def settled(s0, want_hellos):
        """mstored's stats once it has counted want_hellos more HELLOs
        and is back to s0's connections (ours only)."""
        return _stats_when(m, lambda s1: (
            s1["ops.op.hello"] - s0["ops.op.hello"] == want_hellos and
            s1["srv.connections"] == s0["srv.connections"]))

    s0 = m.stats()
    c = stack.imap("alice")
    c.logout()
    c = stack.imap("alice")
    ok(c.append("INBOX", None, None, MSG))
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()
    s1 = settled(s0, 2)
    assert s1["ops.op.hello"] - s0["ops.op.hello"] == 2, (s0, s1)
    assert s1["srv.connections"] == s0["srv.connections"], (s0, s1)

    # carol's mail is in ~/Maildir: no HELLO, and her mail is there
    c = stack.imap("carol")
    ok(c.append("INBOX", None, None, MSG))
    assert c.select("INBOX")[1] == [b"1"]
    assert [x for x in ok(c.fetch("1", "(BODY.PEEK[])"))
            if isinstance(x, tuple)][0][1] == MSG
    c.logout()
    assert os.path.isdir(os.path.join(stack.home("carol"), "Maildir"))
    s2 = settled(s1, 0)
    assert s2["ops.op.hello"] == s1["ops.op.hello"], (s1, s2)
    assert s2["srv.connections"] == s1["srv.connections"], (s1, s2)

    replies = stack.lmtp_send("x@example.test", ["alice@example.test",
                                                 "carol@example.test"], MSG)
    assert [r[0] for r in replies] == [250, 250], replies
    assert stack.imap_pids("lmtp"), "Dovecot's LMTP process is gone"
    s3 = settled(s2, 1)
    assert s3["ops.op.hello"] - s2["ops.op.hello"] == 1, (s2, s3)
    assert s3["srv.connections"] == s2["srv.connections"], (s2, s3)
    c = stack.imap("carol")
    assert c.select("INBOX")[1] == [b"2"]
    c.logout()

    # dave's location has a setting Dovecot does not know: the user is
    # made (and connects), its namespaces fail, the delivery is deferred
    s4 = m.stats()
    replies = stack.lmtp_send("x@example.test", ["dave@example.test"], MSG)
    assert [r[0] for r in replies] == [451], replies
    assert stack.imap_pids("lmtp"), "Dovecot's LMTP process is gone"
    s5 = settled(s4, 1)
    assert s5["ops.op.hello"] - s4["ops.op.hello"] == 1, (s4, s5)
    assert s5["srv.connections"] == s4["srv.connections"], (s4, s5)
    # the one error of this test is that refusal, checked here
    problems = stack.log_problems()
    assert problems and all("rcpt dave@example.test" in l and
                            "Unknown setting: NOSUCHKEY" in l
                            for l in problems), problems
    stack.allow_errors = True
    m.close()


def test_multiappend_catenate(stack):
    c = stack.imap()
    # MULTIAPPEND: two messages in one command
    line = multiappend(c, MSG, MIME, flags2=b"(\\Seen) ")
    assert b"OK" in line and b"APPENDUID" in line and b"1:2" in line, line
    # CATENATE from a URL of the message and a text part
    ok(c.select("INBOX"))
    tag = c._new_tag()
    c.send(tag + b' APPEND INBOX CATENATE (URL "/INBOX;UIDVALIDITY=%s/;'
           b'UID=1/;SECTION=HEADER" TEXT {6}\r\n' %
           c.untagged_responses.get("UIDVALIDITY", [b"0"])[-1])
    assert c.readline().startswith(b"+")
    c.send(b"body\r\n)\r\n")
    line = c.readline()
    while not line.startswith(tag):
        line = c.readline()
    assert b"OK" in line, line
    ok(c.noop())
    body = ok(c.uid("FETCH", "3", "(BODY.PEEK[])"))[0][1]
    assert body.startswith(b"From: a@example.test") and body.endswith(
        b"\r\n\r\nbody\r\n")
    c.logout()


def test_large_binary_8bit(stack):
    c = stack.imap()
    big = (b"Subject: big\r\n\r\n" +
           (b"0123456789abcdef" * 63 + b"0123456789abcd\r\n") * 20480)
    assert len(big) > 20 * 1024 * 1024
    ok(c.append("INBOX", None, None, big))
    binary = (b"Subject: bin\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: binary\r\n\r\n" +
              bytes(range(1, 256)) * 4 + b"\r\n")
    tag = c._new_tag()
    c.send(tag + b" APPEND INBOX ~{%d}\r\n" % len(binary))
    assert c.readline().startswith(b"+")
    c.send(binary + b"\r\n")
    line = c.readline()
    while not line.startswith(tag):
        line = c.readline()
    assert b"OK" in line, line
    eight = "Subject: 8bit\r\n\r\nÄÖÜ äöü 日本語\r\n".encode()
    ok(c.append("INBOX", None, None, eight))
    ok(c.select("INBOX"))
    r = ok(c.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[])"))
    assert int(re.search(rb"RFC822.SIZE (\d+)", r[0][0]).group(1)) == len(big)
    assert r[0][1] == big
    r = ok(c.uid("FETCH", "2", "(BINARY.PEEK[1])"))
    assert bytes(range(1, 256)) * 4 in r[0][1]
    r = ok(c.uid("FETCH", "3", "(BODY.PEEK[])"))
    assert r[0][1] == eight
    c.logout()


def test_changes_from_other_sides(stack):
    a = stack.imap()
    b = stack.imap()
    ok(a.select("INBOX"))
    ok(b.select("INBOX"))
    # a delivery through mstored appears at the next NOOP
    stack.deliver("alice", "INBOX", MSG)
    ok(a.noop())
    assert uids(a) == [1]
    # a flag set in one session appears in the other
    ok(a.store("1", "+FLAGS", r"(\Flagged)"))
    ok(b.noop())
    assert b"\\Flagged" in fetch_map(b, "1", "(UID FLAGS)")[1]
    # an expunge by doveadm reaches both
    stack.doveadm("expunge", "mailbox", "INBOX", "uid", "1", user="alice")
    ok(a.noop())
    ok(b.noop())
    assert uids(a) == [] and uids(b) == []
    # STATUS of a mailbox that is not selected sees new deliveries
    stack.deliver("alice", "INBOX", MSG)
    ok(a.create("Other"))
    ok(a.select("Other"))
    st = ok(a.status("INBOX", "(MESSAGES UIDNEXT UNSEEN)"))
    assert b"MESSAGES 1" in st[0] and b"UIDNEXT 3" in st[0], st
    # ... and at the next command of any kind, not only NOOP: a FETCH,
    # a SEARCH and a STORE (their FAST syncs) report new mail and flags
    # from the store within Dovecot's 5 s between full syncs, as its
    # own formats do
    ok(b.noop())
    for i, (cmd, args) in enumerate((("FETCH", ("1:*", "(FLAGS)")),
                                     ("SEARCH", (None, "ALL")),
                                     ("STORE", ("1", "+FLAGS", "(x%d)")))):
        b.untagged_responses.clear()
        stack.deliver("alice", "INBOX", MSG)
        if cmd == "STORE":
            args = (args[0], args[1], args[2] % i)
        ok(getattr(b, cmd.lower())(*args))
        assert b.untagged_responses.get("EXISTS") == [b"%d" % (i + 2)], \
            (cmd, b.untagged_responses)
    a.logout()
    b.logout()


def test_status_from_list_index(stack):
    """STATUS of a folder that is not open is answered from Dovecot's
    mailbox list index when neither this host's index of it nor the
    store changed since the list index took it: no open, and no request
    while the user's change count is the one the list index recorded,
    nor when it moved by a change in another folder (the mailbox's own
    count, from the watch).  Any change in the store (a delivery, flags, an expunge, the
    mailbox deleted and made again) or by another session here makes
    the STATUS open and sync the folder, and it says what the store
    has."""
    import struct
    import msproto

    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    m.mbox_create("Cached")
    for _ in range(3):
        stack.deliver("alice", "Cached", MSG)
    items = "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"

    def status(why=None):
        """doveadm's STATUS (with its debug log) and an IMAP session's;
        asserts the two agree and whether the folder was opened (why:
        the reason the list index's figures were not used)."""
        r = stack.doveadm("-D mailbox status",
                          "messages unseen uidnext uidvalidity "
                          "highestmodseq", "Cached", user="alice")
        log = [l for l in r.stderr.splitlines() if "Mailbox Cached:" in l]
        opened = any(l.endswith("Mailbox opened") for l in log)
        if why is None:
            assert not opened, log
        else:
            assert opened and any(why in l for l in log), (why, log)
        got = dict(kv.split("=") for kv in r.stdout.split()[1:])
        c = stack.imap()
        line = ok(c.status("Cached", items))[0].decode()
        c.logout()
        for k in ("messages", "unseen", "uidnext", "uidvalidity",
                  "highestmodseq"):
            assert re.search(r"\b%s %s\b" % (k.upper(), got[k]), line), \
                (got, line)
        return {k: int(v) for k, v in got.items()}

    first = status("Mailbox not found")   # the first: the folder is new
    assert first["messages"] == 3 and first["unseen"] == 3
    assert status() == first
    # what a STATUS answered from the list index costs: nothing while
    # the user's change count is the recorded one, and nothing when it
    # moved by a folder made elsewhere (the folder's own count did not)
    def status_requests(times=1):
        c = stack.imap()
        c.list()
        deltas = []
        for _ in range(times):
            ops0 = m.stats()
            ok(c.status("Cached", items))
            ops1 = m.stats()
            deltas.append({k[7:]: ops1[k] - ops0[k] for k in ops1
                           if k.startswith("ops.op.") and
                           ops1[k] != ops0.get(k, 0) and
                           k != "ops.op.status"})
        c.logout()
        return deltas
    assert status_requests() == [{}]
    m.mbox_create("Elsewhere")
    assert status_requests(2) == [{}, {}]
    assert status() == first

    changed = "the mailbox changed in the store"
    stack.deliver("alice", "Cached", MSG)
    now = status(changed)
    assert now["messages"] == 4 and now["uidnext"] == first["uidnext"] + 1
    assert status() == now
    m.store("Cached", [(1, 1)], 0, 1)               # \Seen on UID 1
    now = status(changed)
    assert now["unseen"] == 3
    assert status() == now
    m.expunge("Cached", [(2, 2)])
    now = status(changed)
    assert now["messages"] == 3
    assert status() == now
    # a change by a session here: its sync updates the list index
    c = stack.imap()
    ok(c.select("Cached"))
    ok(c.store("1:*", "+FLAGS", r"(\Seen)"))
    c.logout()
    now = status()
    assert now["unseen"] == 0
    # an IMAP EXPUNGE raises Dovecot's HIGHESTMODSEQ more than the
    # store's, which the plugin then raises to it: one open catches up
    c = stack.imap()
    ok(c.select("Cached"))
    ok(c.store("1", "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    c.logout()
    r = stack.doveadm("-D mailbox status", "messages", "Cached",
                      user="alice")
    assert "messages=2" in r.stdout, r.stdout
    now = status()
    assert now["messages"] == 2
    # the mailbox deleted and made again in the store: a new UIDVALIDITY
    name = struct.pack("<H", 6) + b"Cached"
    m.call(23, name)                                # MBOX_DELETE
    m.call(21, name + struct.pack("<I", 0))         # MBOX_CREATE
    stack.deliver("alice", "Cached", MSG)
    now = status(changed)
    assert now["messages"] == 1 and now["uidvalidity"] != first["uidvalidity"]
    assert status() == now
    m.close()


def test_list_status_one_listing(stack):
    """LIST-STATUS checks every folder it lists against the store when
    its own change count (the watch's, protocol version 7) moved since
    the figures were taken: the first check of the command asks
    MBOX_STATUS, the second one MBOX_LIST, which answers all the others
    (at a session's first listing, the MBOX_LIST that completes the
    local list does); with the count unchanged since then, or since
    this session last checked, it asks nothing, whatever changed in
    other folders.  A folder changed in the store meanwhile is opened
    and shows its new figures."""
    import msproto

    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    names = ["LS%d" % i for i in range(6)]
    for i, n in enumerate(names):
        m.mbox_create(n)
        for _ in range(i + 1):
            stack.deliver("alice", n, MSG)
    c = stack.imap()

    def list_status():
        s0 = m.stats()
        line, untagged = raw(c, 'LIST "" "LS*" RETURN (STATUS (MESSAGES '
                                'UIDNEXT))')
        s1 = m.stats()
        assert b"OK" in line, line
        got = {}
        for u in untagged:
            mm = re.match(rb'\* STATUS "?(LS\d)"? \(MESSAGES (\d+) '
                          rb'UIDNEXT (\d+)\)', u)
            if mm:
                got[mm.group(1).decode()] = int(mm.group(2))
        ops = {k[7:]: s1[k] - s0.get(k, 0) for k in s1
               if k.startswith("ops.op.") and s1[k] != s0.get(k, 0) and
               k != "ops.op.status"}
        return got, ops

    want = {n: i + 1 for i, n in enumerate(names)}
    got, _ = list_status()          # the first: every folder is opened
    assert got == want
    got, ops = list_status()
    assert got == want
    # nothing of the user changed: the list index answers alone
    assert ops == {}, ops
    stack.deliver("alice", "LS3", MSG)
    want["LS3"] += 1
    got, ops = list_status()
    assert got == want
    # LS3 alone is checked and opened: the others' counts did not move
    assert "mbox-list" not in ops and ops.get("changes", 0) >= 1 and \
        ops.get("mbox-status", 0) <= 2, ops
    # the folders the last one checked (all but LS3, which it opened)
    # need no new check while the count has not moved since
    got, ops = list_status()
    assert got == want and ops == {}, ops
    # ...and a change after that check is seen
    stack.deliver("alice", "LS2", MSG)
    want["LS2"] += 1
    got, ops = list_status()
    assert got == want and ops.get("changes", 0) >= 1, ops
    # three changed: the second check asks MBOX_LIST for the rest
    for n in ("LS0", "LS1", "LS4"):
        stack.deliver("alice", n, MSG)
        want[n] += 1
    got, ops = list_status()
    assert got == want and ops.get("mbox-list") == 1, ops
    c.logout()
    # a new session's first listing: the store's list that completes the
    # local list serves the checks too
    c = stack.imap()
    got, ops = list_status()
    ops.pop("hello", None)        # the login's, with its watch
    ops.pop("user-watch", None)
    assert got == want and ops == {"mbox-list": 1}, ops
    c.logout()
    m.close()


def test_list_marked_unmarked(stack):
    """LIST's \\Marked/\\UnMarked, as on Dovecot's own formats: from
    the list index's figures when the change counts say the store has
    nothing newer (no request for it), and neither when they do not."""
    import msproto

    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Work"))
    ok(c.append("Work", None, None, MSG))
    ok(c.select("Work"))
    ok(c.close())

    def flags_of(name):
        s0 = m.stats()
        data = ok(c.list('""', '"*"'))
        s1 = m.stats()
        asked = {k for k in s1 if k.startswith("ops.op.") and
                 k != "ops.op.status" and s1[k] != s0.get(k, 0)}
        for line in data:
            if line.endswith(b" " + name.encode()):
                return line.split(b")")[0], asked
        raise AssertionError(data)

    flags, _ = flags_of("Work")
    assert b"\\UnMarked" in flags, flags
    flags, asked = flags_of("Work")
    assert b"\\UnMarked" in flags and not asked, (flags, asked)
    # new mail in the store: not \\UnMarked any more, and LIST does not
    # open the folder or ask the store about it to say so
    stack.deliver("alice", "Work", MSG)
    flags, asked = flags_of("Work")
    assert b"Marked" not in flags, flags
    assert not asked, asked
    typ, data = c.select("Work")
    assert typ == "OK" and data == [b"2"], data
    c.logout()
    m.close()


def test_recent(stack):
    """\\Recent as IMAP4rev1 and Dovecot's own formats have it: mail that
    arrived in the store (a delivery, another host) is recent to the
    first session that selects or syncs the folder after it came, and to
    no other; STATUS counts it without taking it; a rebuilt index (after
    a loss) makes nothing recent, nor does a host's first look at a
    folder (its index is made then)."""
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    ok(c.select("INBOX"))
    assert c.untagged_responses["RECENT"] == [b"0"]
    ok(c.uid("STORE", "1", "+FLAGS", "(\\Deleted)"))
    ok(c.expunge())
    c.logout()
    for _ in range(2):
        stack.deliver("alice", "INBOX", MSG)
    c1, c2 = stack.imap(), stack.imap()
    typ, data = c1.status("INBOX", "(RECENT)")
    assert b"RECENT 2" in data[0], data
    ok(c1.select("INBOX"))
    assert c1.untagged_responses["RECENT"] == [b"2"]
    assert c1.untagged_responses["EXISTS"] == [b"2"]
    data = ok(c1.fetch("1:*", "(FLAGS)"))
    assert all(b"\\Recent" in d for d in data), data
    ok(c2.select("INBOX"))
    assert c2.untagged_responses["RECENT"] == [b"0"]
    stack.deliver("alice", "INBOX", MSG)
    ok(c1.noop())
    assert c1.untagged_responses["RECENT"][-1] == b"3", \
        c1.untagged_responses
    ok(c2.noop())
    assert c2.untagged_responses["EXISTS"][-1] == b"3"
    assert c2.untagged_responses["RECENT"][-1] == b"0"
    data = ok(c2.fetch("3", "(FLAGS)"))
    assert b"\\Recent" not in data[0], data
    for c in (c1, c2):
        c.logout()
    # the index lost: the rebuilt one has nothing recent
    stack.deliver("alice", "INBOX", MSG)
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    ok(c.select("INBOX"))
    assert c.untagged_responses["RECENT"] == [b"0"]
    assert c.untagged_responses["EXISTS"] == [b"4"]
    c.logout()


def test_idle_woken_by_store(stack):
    c = stack.imap()
    ok(c.select("INBOX"))
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    t0 = time.time()
    stack.deliver("alice", "INBOX", MSG)
    c.sock.settimeout(10)
    line = idle_line(c)
    assert b"EXISTS" in line, line
    # well below mailbox_idle_check_interval (30 s): the store woke it
    assert time.time() - t0 < 5
    # a flag set by another session (through the store) too
    other = stack.imap()
    ok(other.select("INBOX"))
    t0 = time.time()
    ok(other.store("1", "+FLAGS", r"(\Flagged)"))
    line = idle_line(c)
    while b" RECENT" in line:     # the delivery's, after its EXISTS
        line = idle_line(c)
    assert b"FETCH" in line and b"\\Flagged" in line, line
    assert time.time() - t0 < 5
    other.logout()
    idle_done(c, tag)
    c.logout()


def test_idle_outlives_a_store_restart(stack):
    """mstored restarted (an upgrade) or away for a while under IDLEing
    sessions: the IDLE connection comes back by itself and the next
    change wakes the session as before; Dovecot's log has one warning
    for the lost connection, no error, and nothing for each retry while
    the store is away."""
    c = stack.imap()
    ok(c.select("INBOX"))
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+")
    c.sock.settimeout(25)
    log0 = os.path.getsize(stack.dlog)
    stack.kill_mstored(signal.SIGTERM)
    time.sleep(3)    # the first retries (1 s, then 2 s later) fail
    stack.start_mstored()
    t0 = time.time()
    stack.deliver("alice", "INBOX", MSG)
    line = idle_line(c)
    assert b"EXISTS" in line, line
    # woken by the store when the next retry (at most 10 s after the
    # last) came back, before mailbox_idle_check_interval (30 s)
    assert time.time() - t0 < 15
    idle_done(c, tag)
    c.logout()
    with open(stack.dlog, "rb") as f:
        f.seek(log0)
        new = [ln for ln in f.read().decode(errors="replace").splitlines()
               if "mstore" in ln]
    warnings = [ln for ln in new if "Warning" in ln]
    assert len(warnings) == 1 and "IDLE" in warnings[0], new
    assert not [ln for ln in new if "Error" in ln], new


def test_qresync(stack):
    c = stack.imap()
    for i in range(4):
        ok(c.append("INBOX", None, None, MSG))
    ok(c._simple_command("ENABLE", "QRESYNC"))
    ok(c.select("INBOX"))
    uidv = int(c.untagged_responses["UIDVALIDITY"][-1])
    ok(c.noop())
    r = ok(c.status("INBOX", "(HIGHESTMODSEQ)"))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", r[0]).group(1))
    c.close()
    # changes made elsewhere while this client is away
    other = stack.imap()
    ok(other.select("INBOX"))
    ok(other.store("2", "+FLAGS", r"(\Seen)"))
    ok(other.store("3", "+FLAGS", r"(\Deleted)"))
    ok(other.expunge())
    other.logout()
    typ, data = c._simple_command(
        "SELECT", "INBOX", "(QRESYNC (%d %d))" % (uidv, hms))
    assert typ == "OK"
    vanished = c.untagged_responses.get("VANISHED", [])
    fetches = c.untagged_responses.get("FETCH", [])
    assert any(b"3" in v for v in vanished), c.untagged_responses
    assert any(b"UID 2" in f and b"\\Seen" in f for f in fetches), fetches
    c.logout()


def test_qresync_after_purge(stack):
    """A QRESYNC client whose Dovecot index last synced before a purge:
    the store's feed no longer lists the purged expunge, so it answers
    MS_ESTATE, the plugin pulls the whole mailbox, and the client still
    gets the message as VANISHED and does not see it again."""
    import msproto
    with open(stack.conf, "a") as f:
        f.write("undelete_window = 1s\n")
    stack.kill_mstored()
    stack.start_mstored()
    c = stack.imap()
    for i in range(4):
        ok(c.append("INBOX", None, None, MSG))
    ok(c._simple_command("ENABLE", "QRESYNC"))
    ok(c.select("INBOX"))
    uidv = int(c.untagged_responses["UIDVALIDITY"][-1])
    r = ok(c.status("INBOX", "(HIGHESTMODSEQ)"))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", r[0]).group(1))
    c.logout()
    # uid 3 expunged in the store itself, not through Dovecot (whose
    # index keeps it until its next sync), then purged after the window
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    known = m.mbox_status("INBOX")["highestmodseq"]
    m.expunge("INBOX", [(3, 3)])
    _, _, gone = m.changes("INBOX", known)
    assert gone == [(3, 3)]
    time.sleep(2.2)
    adm = msproto.Client(stack.p("mstored-admin.sock"))
    adm.compact(purge_only=True)
    adm.close()
    with pytest.raises(msproto.Error) as e:
        m.changes("INBOX", known)
    assert e.value.status == msproto.MS_ESTATE
    m.close()
    c = stack.imap()
    ok(c._simple_command("ENABLE", "QRESYNC"))
    typ, data = c._simple_command(
        "SELECT", "INBOX", "(QRESYNC (%d %d))" % (uidv, hms))
    assert typ == "OK", data
    vanished = b" ".join(c.untagged_responses.get("VANISHED", []))
    assert re.search(rb"(^|[ ,:])3([ ,:]|$)", vanished), \
        c.untagged_responses
    c.state = "SELECTED"    # imaplib did not see the SELECT
    assert uids(c) == [1, 2, 4]


def test_select_asks_once_writes_nothing(stack):
    """A SELECT pulls from the store once (its open's pull stands for
    its sync) and a sync that finds nothing new writes nothing to the
    index log; a delivery just before a SELECT is still in its EXISTS,
    and a flag set through the store shows at the next SELECT."""
    import os
    log = os.path.join(stack.index_dir("alice"), "mailboxes", "INBOX",
                       "mstore-box", "dovecot.index.log")
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()
    size = os.path.getsize(log)
    for _ in range(5):
        c = stack.imap()
        assert c.select("INBOX")[1] == [b"1"]
        c.noop()
        c.logout()
    assert os.path.getsize(log) == size
    for n in (2, 3):
        stack.deliver("alice", "INBOX", MSG)
        c = stack.imap()
        assert c.select("INBOX")[1] == [str(n).encode()]
        c.logout()
    other = stack.imap()
    other.select("INBOX")
    other.store("1", "+FLAGS", "\\Flagged")
    other.logout()
    c = stack.imap()
    c.select("INBOX")
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[0]
    c.logout()


def test_select_with_the_store_late_to_answer(stack):
    """The first command of a session before mstored has answered the
    HELLO sent at login: the mailbox's index opens first and its sync
    waits for the answer (the open does not wait before it reads the
    index); a delivery since the index was last synced is still in
    EXISTS, and nothing is logged."""
    import threading
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()
    stack.deliver("alice", "INBOX", MSG)
    pid = stack.mstored_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        c = stack.imap()  # Dovecot answers LOGIN; the HELLO waits
        got = []

        def run():
            t = threading.Timer(0.5, os.kill, (pid, signal.SIGCONT))
            t.start()
            try:
                t0 = time.time()
                got.append(c.select("INBOX")[1])
                got.append(time.time() - t0)
            finally:
                t.join()
        lines = _traced(stack, run, calls="openat,poll")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert got[0] == [b"2"], got
    assert got[1] >= 0.4, got  # it did wait for the store
    opened = [i for i, l in enumerate(lines)
              if re.search(r'INBOX/mstore-box/dovecot\.index"', l)]
    waited = [i for i, l in enumerate(lines) if "poll(" in l]
    assert opened and waited, lines
    assert opened[0] < waited[0], lines
    c.logout()
    assert not stack.log_problems()


def _index_positions(path):
    """dovecot.index as written: (log_file_seq, log_file_tail_offset) of
    its header and (log_seq, log_offset) of its modseq extension's."""
    import struct
    with open(path, "rb") as f:
        data = f.read(65536)
    base, hsize = struct.unpack_from("<HI", data, 2)
    seq, tail = struct.unpack_from("<II", data, 60)
    off = base
    while off < hsize:
        hdr_size, _, _, _, _, name_size = struct.unpack_from(
            "<IIHHHH", data, off)
        name = data[off + 16:off + 16 + name_size]
        at = off + ((16 + name_size + 7) & ~7)
        if name == b"modseq":
            _, mseq, moff = struct.unpack_from("<QII", data, at)
            return (seq, tail), (mseq, moff)
        off = at + ((hdr_size + 7) & ~7)
    raise AssertionError("no modseq extension in %s" % path)


def test_select_one_request_index_current(stack):
    """A SELECT of a mailbox an earlier session opened asks the store
    nothing when nothing of the user changed since that session's sync
    (the user's change count from the session's USER_WATCH equals the
    one its index recorded), and MBOX_STATUS when something did (CHANGES
    too when it is this mailbox): whether the store is a standby comes
    with HELLO, the mailbox GUID the list index wants is cached in the
    index.
    And after dovecot.index.log rotates, the next sync writes
    dovecot.index with a modseq header that has caught up with its log
    position: a lagging one makes every open walk every message's
    modseq."""
    import os
    import msproto
    for _ in range(3):
        stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"3"]
    c.logout()
    m = msproto.Client(stack.p("mstored.sock"), user="alice")

    def requests(select, by_op=None):
        """The store requests of one session (login, maybe SELECT), by
        op, but for this test's own STATUS."""
        s0 = m.stats()
        c = stack.imap()
        if select:
            assert c.select("INBOX")[1] == [b"3"]
        c.logout()
        # the HELLO goes out pipelined as the session starts (its reply
        # is read by the first request that needs the store): a session
        # that asks nothing else can be over before mstored has read
        # it, on a loaded machine
        s1 = _stats_when(
            m, lambda s1: s1["ops.op.hello"] != s0["ops.op.hello"])
        delta = {k[len("ops.op."):]: s1[k] - s0[k] for k in s1
                 if k.startswith("ops.op.") and s1[k] != s0[k] and
                 k != "ops.op.status"}
        if by_op is not None:
            by_op.update(delta)
        return sum(delta.values())

    ops, ops0 = {}, {}
    requests(True, ops)
    requests(False, ops0)
    assert ops == {"hello": 1, "user-watch": 1}, ops
    # a login alone says HELLO and starts its watch, nothing more: the
    # folder list is asked for by the first listing (or a mailbox not
    # found here).  The watch goes out right behind the HELLO, and a
    # session that ends at once may be gone before mstored reads it
    # (its connection reset with the HELLO's reply unread)
    assert ops0.get("hello") == 1 and \
        set(ops0) <= {"hello", "user-watch"}, ops0
    # a change elsewhere of the user: the user's count moved, this
    # mailbox's did not (the watch's mailbox counts): nothing asked
    c = stack.imap()
    ok(c.create("Other"))
    c.logout()
    ops = {}
    requests(True, ops)
    assert ops == {"hello": 1, "user-watch": 1}, ops
    # rotate the index log at the next sync (doveadm's settings only)
    idx = os.path.join(stack.index_dir("alice"), "mailboxes", "INBOX",
                       "mstore-box", "dovecot.index")
    def log_seq():
        import struct
        with open(idx + ".log", "rb") as f:
            return struct.unpack_from("<I", f.read(16), 8)[0]
    seq0 = log_seq()
    stack.doveadm("-o mail_index_log_rotate_min_size=1 "
                  "-o mail_index_log_rotate_max_size=1 "
                  "-o mail_index_log_rotate_min_time=0 flags add",
                  "\\Flagged", "mailbox", "INBOX", "1", user="alice")
    assert log_seq() > seq0, "the log did not rotate"
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"3"]
    c.logout()
    (seq2, tail2), (mseq, moff) = _index_positions(idx)
    assert (mseq, moff) >= (seq2, tail2), \
        "modseq header %s behind the index's log position %s" % (
            (mseq, moff), (seq2, tail2))
    c = stack.imap()
    c.select("INBOX")
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[0]
    c.logout()
    # something new in the store: CHANGES too
    stack.deliver("alice", "INBOX", MSG)
    s0 = m.stats()
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"4"]
    c.logout()
    s1 = m.stats()
    assert s1["ops.op.changes"] - s0["ops.op.changes"] == 1
    assert s1["ops.op.mbox-status"] - s0["ops.op.mbox-status"] == 1
    m.close()


def test_other_folders_change_asks_nothing(stack):
    """A change in one folder costs the next open of another nothing (the
    watch's count of each mailbox, protocol version 7): after each of a
    delivery, a flag change by another client of the store, an expunge,
    a subscription and a new folder, all in folder A, a new session's
    SELECT of B and a STATUS of B (from the list index) ask the store
    nothing, a NOOP in a session that had B selected before the change
    asks nothing, and a SELECT of A asks and shows the change.  A folder
    renamed away and another made under its name, and a folder deleted
    and made again, are each seen as the new folder."""
    import msproto
    c = stack.imap()
    for box in ("A", "B"):
        ok(c.create(box))
    c.logout()
    stack.deliver("alice", "A", MSG)
    stack.deliver("alice", "B", MSG)
    stack.deliver("alice", "B", MSG)
    c = stack.imap()
    assert c.select("A")[1] == [b"1"]
    assert c.select("B")[1] == [b"2"]
    c.logout()
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    held = stack.imap()  # B selected before every change
    assert held.select("B")[1] == [b"2"]
    n_a = 1

    def change(kind):
        nonlocal n_a
        if kind == "deliver":
            stack.deliver("alice", "A", MSG)
            n_a += 1
        elif kind == "flag":
            m.store("A", [(1, 1)], 0, 4)
        elif kind == "expunge":
            stack.deliver("alice", "A", MSG)
            uid = m.mbox_status("A")["uidnext"] - 1
            m.expunge("A", [(uid, uid)])
        elif kind == "subscribe":
            ok(stack.imap().subscribe("A"))
        else:
            ok(stack.imap().create("A/" + kind))

    for kind in ("deliver", "flag", "expunge", "subscribe", "new"):
        change(kind)
        before = _ops(stack, "changes", "mbox-status")
        s = stack.imap()
        assert s.select("B")[1] == [b"2"], kind
        s.logout()
        s = stack.imap()
        typ, data = s.status("B", "(MESSAGES)")
        assert typ == "OK" and b"MESSAGES 2" in data[0], (kind, data)
        s.logout()
        ok(held.noop())
        assert _ops(stack, "changes", "mbox-status") == before, kind
        s = stack.imap()
        assert s.select("A")[1] == [str(n_a).encode()], kind
        shown = _fetch_flags(s)
        want = {u: sorted(f) for u, (f, _) in shown.items()}
        assert stack.store_view("alice", "A") == want, kind
        s.logout()
    # a change in B reaches the session that has it selected
    stack.deliver("alice", "B", MSG)
    ok(held.noop())
    assert len(_fetch_flags(held)) == 3
    held.logout()
    # B renamed away, another B made: the new one is shown
    c = stack.imap()
    ok(c.rename("B", "B-old"))
    ok(c.create("B"))
    c.logout()
    s = stack.imap()
    assert s.select("B")[1] == [b"0"]
    assert s.select("B-old")[1] == [b"3"]
    s.logout()
    # A deleted and made again
    c = stack.imap()
    for sub in ("A/new",):
        ok(c.delete(sub))
    ok(c.delete("A"))
    ok(c.create("A"))
    c.logout()
    stack.deliver("alice", "A", MSG)
    s = stack.imap()
    assert s.select("A")[1] == [b"1"]
    s.logout()
    m.close()
    assert stack.log_problems() == []


def test_own_changes_ask_nothing_later(stack):
    """A session's own STORE and EXPUNGE leave the folder's index at the
    count of its last change (the replies' mailbox counts, protocol
    version 7, chained from the index's), so that later sessions' SELECTs
    of it ask the store nothing, and show what the store has; a change
    by another client after them is asked for and seen."""
    import msproto
    for _ in range(4):
        stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"4"]
    ok(c.uid("STORE", "1", "+FLAGS", r"(\Seen)"))
    ok(c.uid("STORE", "2", "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    ok(c.uid("STORE", "3", "+FLAGS", r"(\Flagged)"))
    c.logout()

    def select_asks(n):
        before = _ops(stack, "changes", "mbox-status")
        s = stack.imap()
        assert s.select("INBOX")[1] == [str(n).encode()]
        want = {u: sorted(f) for u, (f, _) in _fetch_flags(s).items()}
        s.logout()
        asked = [b - a for a, b in zip(before, _ops(stack, "changes",
                                                    "mbox-status"))]
        assert stack.store_view("alice", "INBOX") == want
        return asked
    for _ in range(3):
        assert select_asks(3) == [0, 0]
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    m.store("INBOX", [(4, 4)], 0, 4)
    assert sum(select_asks(3)) >= 1
    assert select_asks(3) == [0, 0]
    # a change of the mailbox that moves no modseq (an MBOX_UPDATE, as
    # a migration makes) between the index's last look and a session's
    # STORE: the STORE's counts do not chain from the index's, so the
    # index records none, and the next SELECT asks
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"3"]
    uidnext = m.mbox_status("INBOX")["uidnext"]
    m.mbox_update("INBOX", uidnext=uidnext + 10)
    ok(c.uid("STORE", "3", "-FLAGS", r"(\Flagged)"))
    c.logout()
    assert sum(select_asks(3)) >= 1
    m.close()


def test_user_watch_skips_only_unchanged(stack):
    """A sync asks the store nothing while the user's change count (its
    connection's USER_WATCH) is the one its index recorded, and sees every
    change made from any other side: 20 rounds of a change (a delivery,
    a flag or an expunge by another client of the store, a new folder)
    each followed at once by a SELECT in a session logged in before it,
    and by a NOOP in a session that has the folder selected.  A NOOP or
    a re-SELECT with nothing changed asks nothing.  After mstored
    restarts (a clean stop: the epoch and counts are kept) a delivery
    made then moves the count, and the next SELECT shows it."""
    import msproto
    stack.deliver("alice", "INBOX", MSG)
    sel = stack.imap()
    assert sel.select("INBOX")[1] == [b"1"]
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    # nothing changed: a NOOP and a SELECT again ask nothing
    before = _ops(stack, "changes", "mbox-status")
    ok(sel.noop())
    assert sel.select("INBOX")[1] == [b"1"]
    assert _ops(stack, "changes", "mbox-status") == before
    n = 1
    for i in range(20):
        c = stack.imap()  # logged in, and synced, before the change
        assert c.select("INBOX")[1] == [str(n).encode()]
        kind = i % 4
        if kind == 0:
            stack.deliver("alice", "INBOX", MSG)
            n += 1
        elif kind == 1:
            m.store("INBOX", [(1, 1)], 0 if i % 8 == 1 else 1, 4)
        elif kind == 2:
            stack.deliver("alice", "INBOX", MSG)
            uid = m.mbox_status("INBOX")["uidnext"] - 1
            m.expunge("INBOX", [(uid, uid)])
        else:
            ok(stack.imap().create("F%d" % i))
        # each first, before the other's sync can bring the change into
        # the index they share
        if i % 2:
            typ, data = c.select("INBOX")
            assert typ == "OK" and data == [str(n).encode()], (i, data)
        ok(sel.noop())
        sel.untagged_responses.clear()  # what the NOOP said
        shown = _fetch_flags(sel)
        assert len(shown) == n, (i, shown)
        want = {u: sorted(f) for u, (f, _) in shown.items()}
        assert stack.store_view("alice", "INBOX") == want, i
        if i % 2 == 0:
            typ, data = c.select("INBOX")
            assert typ == "OK" and data == [str(n).encode()], (i, data)
        c.logout()
    m.close()
    stack.kill_mstored()
    stack.start_mstored()
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    assert c.select("INBOX")[1] == [str(n + 1).encode()]
    c.logout()


def test_watch_polled_once_per_command(stack):
    """A LIST-STATUS answers each folder whose list index record is
    current by the user's change count, and each such check read the
    store socket for news of the watch (a recv that said EAGAIN), twice
    a folder.  A poll is taken as good for the rest of its ioloop run
    while no storage of the process made a request or read since:
    traced, three LIST-STATUS of 10 unchanged folders read the socket
    once each and send nothing (60 reads with a poll at every check).
    Still seen: a delivery made before the next command (MESSAGES 2),
    and the session's own APPEND or COPY sent in one write with the
    STATUS or LIST-STATUS after it.  (These last pass without the
    request count in the rule too: Dovecot's own check of the list
    index record sees the folder's index, which the APPEND's or COPY's
    transaction wrote.  The count is for a change that reaches the store
    without that index, through another storage of the same store user
    in the process, which this stack has not.)"""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    from test_dovecot_notify import Session
    c = stack.imap()
    for i in range(10):
        ok(c.create("pw-%d" % i))
        ok(c.append("pw-%d" % i, None, None, MSG))
    c.logout()
    s = Session(stack.imap_port, "alice")
    cmd = 'LIST "" "pw-*" RETURN (STATUS (MESSAGES))'

    def counts(lines):
        got = {}
        for l in lines:
            m = re.match(rb'\* STATUS "?(pw-\d+)"? \(MESSAGES (\d+)\)', l)
            if m:
                got[m.group(1).decode()] = int(m.group(2))
        return got
    assert counts(s.cmd(cmd)[1]) == {"pw-%d" % i: 1 for i in range(10)}
    s.cmd(cmd)  # every record checked once: the rest by the counts

    def lists():
        for _ in range(3):
            got = counts(s.cmd(cmd)[1])
            assert got == {"pw-%d" % i: 1 for i in range(10)}, got
    lines = _traced(stack, lists, "recvfrom,sendto")
    # the store client's calls (Dovecot's own use read and write)
    store = [l for l in lines if "MSG_DONTWAIT" in l]
    assert [l.split("(")[0].split()[-1] for l in store] == \
        ["recvfrom"] * 3, lines

    # a delivery before the command
    stack.deliver("alice", "pw-3", MSG)
    assert counts(s.cmd(cmd)[1])["pw-3"] == 2
    # the session's own APPEND in the same write as the LIST-STATUS
    def pipelined(tag, cmds):
        """cmds (bytes, each ending in CRLF) tagged tag1, tag2, ...
        sent in one write; every line until each is answered OK."""
        s.s.sendall(b"".join(b"%s%d %s" % (tag, i + 1, c)
                             for i, c in enumerate(cmds)))
        oks = tuple(b"%s%d OK" % (tag, i + 1) for i in range(len(cmds)))
        got, n = [], 0
        while n < len(cmds):
            line = s.line()
            assert line is not None, got
            got.append(line)
            n += line.startswith(oks)
        return got
    def append(box):
        return b"APPEND %s {%d+}\r\n" % (box, len(MSG)) + MSG + b"\r\n"
    got = pipelined(b"a", [append(b"pw-5"), cmd.encode() + b"\r\n"])
    assert counts(got)["pw-5"] == 2, got
    # and with a STATUS
    got = pipelined(b"b", [append(b"pw-6"),
                           b"STATUS pw-6 (MESSAGES)\r\n"])
    assert counts(got)["pw-6"] == 2, got
    # a COPY from the selected folder, and the commands after it in the
    # same write
    s.cmd("SELECT pw-0")
    got = pipelined(b"c", [b"UID COPY 1 pw-7\r\n",
                           b"STATUS pw-7 (MESSAGES)\r\n",
                           b"UID COPY 1 pw-8\r\n", cmd.encode() + b"\r\n"])
    assert [counts([l]) for l in got if l.startswith(b"* STATUS")][0] == \
        {"pw-7": 2}, got
    assert counts(got)["pw-8"] == 2, got
    s.close()


def test_clean_restart_keeps_change_counts(stack):
    """mstored stopped cleanly keeps the users' change counts and their
    epoch (docs/protocol.md, USER_WATCH): after the restart, new
    sessions' SELECTs of folders nobody changed ask the store nothing
    and show what they showed, and a STATUS is answered from Dovecot's
    list index without asking either.  A change made after the restart
    is seen at once.  After a kill -9 (a new epoch) the SELECT of each
    folder asks again, and is right.  No error in Dovecot's log."""
    import signal
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    ok(c.create("Kept"))
    stack.deliver("alice", "Kept", MSG)
    stack.deliver("alice", "Kept", MSG)
    assert c.select("Kept")[1] == [b"2"]
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()

    def asked(want, status=None):
        """One new session: STATUS of a folder (name, MESSAGES), then a
        SELECT of each of want's (name, EXISTS), each checked; the
        CHANGES and MBOX_STATUS requests it made of the store."""
        before = _ops(stack, "changes", "mbox-status")
        s = stack.imap()
        if status:
            typ, data = s.status(status[0], "(MESSAGES)")
            assert typ == "OK" and \
                b"MESSAGES %d" % status[1] in data[0], (typ, data)
        for box, n in want:
            typ, data = s.select(box)
            assert typ == "OK" and data == [str(n).encode()], (box, data)
        s.logout()
        return [b - a for a, b in zip(before,
                                      _ops(stack, "changes",
                                           "mbox-status"))]

    stack.kill_mstored()
    stack.start_mstored()
    # a STATUS answered from Dovecot's list index asks nothing
    assert asked([], status=("Kept", 2)) == [0, 0]
    assert asked([("INBOX", 1), ("Kept", 2)]) == [0, 0]
    # a change after the restart: asked for, and seen
    stack.deliver("alice", "Kept", MSG)
    n = asked([("Kept", 3)])
    assert n[0] + n[1] >= 1, n
    # killed: every count is stale, each folder's first open asks
    stack.kill_mstored(signal.SIGKILL)
    stack.start_mstored()
    n = asked([("INBOX", 1), ("Kept", 3)])
    assert n[0] + n[1] >= 2, n


def test_sync_without_changes_takes_no_index_lock(stack):
    """A sync that finds nothing new in the store (a NOOP, a SELECT of a
    mailbox nobody touched) asks CHANGES before it locks Dovecot's index
    and then does not lock it: with dovecot.index.log locked by another
    process, those commands still answer at once.  A change in the
    store waits for the lock, and arrives once it is free."""
    import fcntl
    import os
    import threading
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    assert c.select("INBOX")[1] == [b"1"]
    c2 = stack.imap()
    log = os.path.join(stack.index_dir("alice"), "mailboxes", "INBOX",
                       "mstore-box", "dovecot.index.log")
    fd = os.open(log, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        for conn in (c, c2):
            conn.sock.settimeout(5)
        ok(c.noop())
        assert c2.select("INBOX")[1] == [b"1"]
        ok(c2.noop())
        stack.deliver("alice", "INBOX", MSG)
        result = []
        t = threading.Thread(target=lambda: result.append(c.noop()))
        t.start()
        t.join(1.0)
        assert t.is_alive(), "a NOOP with a change to apply did not wait"
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)
    t.join(5)
    assert result and result[0][0] == "OK"
    assert c.untagged_responses.get("EXISTS", [])[-1:] == [b"2"]
    for conn in (c, c2):
        conn.sock.settimeout(None)
        conn.logout()


def test_folder_made_elsewhere_reaches_an_open_session(stack):
    """A folder made at the store by another host after this session
    listed its folders: SELECT of it finds it (and the session's next
    LIST shows it); a folder that is nowhere is still not found, and
    finding that out costs one MBOX_STATUS, not a listing of every
    folder (a client probing names does not make the store list the
    user's folders each time)."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    names = b" ".join(ok(c.list()))
    assert b"Elsewhere" not in names
    stack.doveadm_fresh("mailbox create", "Elsewhere", user="alice")
    stack.deliver("alice", "Elsewhere", MSG)
    typ, data = c.select("Elsewhere")
    assert typ == "OK" and data == [b"1"], (typ, data)
    assert b"Elsewhere" in b" ".join(ok(c.list()))
    s0 = m.stats()
    for name in ("Nowhere", "Elsewhere/Nowhere", "Nowhere/Deeper"):
        typ, data = c.select(name)
        assert typ == "NO" and b"doesn't exist" in data[0], (typ, data)
    s1 = m.stats()
    assert s1["ops.op.mbox-list"] == s0["ops.op.mbox-list"]
    assert s1["ops.op.mbox-status"] - s0["ops.op.mbox-status"] == 3
    # made elsewhere once more: still found
    stack.doveadm_fresh("mailbox create", "Elsewhere/Later", user="alice")
    typ, data = c.select("Elsewhere/Later")
    assert typ == "OK" and data == [b"0"], (typ, data)
    assert m.stats()["ops.op.mbox-list"] == s1["ops.op.mbox-list"] + 1
    c.logout()
    m.close()


def test_login_connection_outlives_a_store_restart(stack):
    """The plugin connects and says HELLO when the session's storage is
    made, and reads the reply with its first request.  The store
    restarted in between (that connection is dead), or down at login and
    up later, or down at the first command: the session goes on, or says
    NO, and Dovecot's log has only the refused connect to show for it."""
    stack.allow_errors = True   # the refused connect is logged
    stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()                       # HELLO sent, reply not read
    stack.kill_mstored()
    stack.start_mstored()
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"], (typ, data)
    c.logout()

    stack.kill_mstored()
    c = stack.imap()                       # nothing to connect to
    typ, data = c.select("INBOX")
    assert typ == "NO", (typ, data)
    stack.start_mstored()
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"], (typ, data)
    c.logout()
    # one line for the one SELECT that failed (its sync asks the store
    # once, before the index lock, and does not ask again under it)
    problems = stack.log_problems()
    assert len(problems) == 1 and "mstore: connect to" in problems[0] and \
        "Connection refused" in problems[0], problems


def test_user_gone_from_the_store(stack):
    """A user Dovecot knows and the store no longer has (deleted there):
    the HELLO sent at login is refused; a SELECT says NO, whether its
    folder is here (the refusal is read with the MBOX_STATUS sent ahead
    of the index's open) or not (read by the request that looks for the
    folder), and Dovecot's log has one line for each refusal, not two;
    alice's sessions go on."""
    stack.allow_errors = True   # the refusals are logged
    stack.deliver("bob", "INBOX", MSG)
    c = stack.imap("bob")
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()
    stack.mstore("user", "del", "bob")
    for box in ("INBOX", "Never"):
        c = stack.imap("bob")
        typ, data = c.select(box)
        assert typ == "NO", (box, typ, data)
        c.logout()
    # the log process writes the lines after the sessions have said
    # NO: wait for them (no more come: each session logged before NO)
    deadline = time.monotonic() + 5
    problems = stack.log_problems()
    while len(problems) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        problems = stack.log_problems()
    assert len(problems) == 2, problems
    for p in problems:
        assert "HELLO as bob" in p and "no such user" in p, problems
    c = stack.imap()
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_mailbox_guid_cache_follows_the_store(stack):
    """The mailbox GUID the plugin caches in Dovecot's index
    ("mstore-guid") is the store's: one set by doveadm mailbox update
    shows in the next process, and a mailbox the store replaced under
    the same name (deleted and created again behind Dovecot's back, the
    index left in place) gets its new GUID, not the cached one, once a
    session has opened it.  (Until then `doveadm mailbox status guid`
    answers from Dovecot's mailbox list index, which never asks.)"""
    import struct
    import msproto

    def guid(box="Cached"):
        out = stack.doveadm("mailbox status", "guid", box,
                            user="alice").stdout
        return re.search(r"guid=([0-9a-f]{32})", out).group(1)

    c = stack.imap()
    ok(c.create("Cached"))
    ok(c.select("Cached"))
    c.logout()
    first = guid()
    assert guid() == first      # read back from the cache
    new = "0123456789abcdef0123456789abcdef"
    stack.doveadm("mailbox update", "--mailbox-guid", new, "Cached",
                  user="alice")
    assert guid() == new
    c = stack.imap()
    ok(c.select("Cached"))
    c.logout()
    assert guid() == new
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    name = struct.pack("<H", 6) + b"Cached"
    m.call(23, name)                            # MBOX_DELETE
    m.call(21, name + struct.pack("<I", 0))     # MBOX_CREATE
    m.close()
    c = stack.imap()
    typ, data = c.select("Cached")
    assert typ == "OK" and data == [b"0"], data
    c.logout()
    again = guid()
    assert again not in (first, new)
    assert guid() == again


def test_fetch_read_ahead(stack):
    """mail_prefetch_count (4 in the test config): FETCH 1:* sends each
    body's FETCH_BODY ahead.  Every body comes back byte for byte: small
    ones, one larger than the plugin's request chunk (asked whole), one
    over the read-ahead byte bound (read by itself).  Messages expunged
    in the store behind Dovecot's back get the store's error for their
    read-ahead, are asked again by the mail and are reported as
    expunged; the session goes on with correct answers (no reply is left
    on the connection)."""
    import msproto
    bodies = {}
    c = stack.imap()
    sizes = [200 + 97 * i for i in range(24)]
    sizes[8] = 5 << 20          # over MSTORE_BODY_CHUNK (4 MiB)
    sizes[16] = 9 << 20         # over MSTORE_PREFETCH_MAX_BYTES (8 MiB)
    for i, size in enumerate(sizes):
        head = b"Subject: ahead %d\r\n\r\n" % i
        line = (b"%06d " % i) + b"x" * 56 + b"\r\n"
        body = head + line * ((size - len(head)) // len(line) + 1)
        ok(c.append("INBOX", None, None, body))
        bodies[i + 1] = body
    ok(c.select("INBOX"))
    gone = [3, 4, 12]
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    before = m.stats()
    m.expunge("INBOX", [(3, 4), (12, 12)])
    t = c._new_tag()
    c.send(t + b" UID FETCH 1:* (UID BODY.PEEK[])\r\n")
    got = {}
    while True:
        line = c.readline()
        if line.startswith(t + b" "):
            break
        mt = re.match(rb"\* \d+ FETCH \(UID (\d+) BODY\[\] \{(\d+)\}\r\n$",
                      line)
        if mt:
            got[int(mt.group(1))] = c.read(int(mt.group(2)))
            assert c.readline() == b")\r\n"
    after = m.stats()
    m.close()
    # each expunged message: the read-ahead's error, then the mail's own
    # the store's errors for them (the read-ahead's and the mail's own)
    assert after["ops.errors"] - before["ops.errors"] >= len(gone)
    assert line.split()[1] in (b"OK", b"NO"), line
    want = {u: b for u, b in bodies.items() if u not in gone}
    assert sorted(got) == sorted(want)
    for u in want:
        assert got[u] == want[u], u
    # the session goes on: the expunges are seen, bodies still right
    ok(c.noop())
    assert uids(c) == [u for u in bodies if u not in gone]
    r = ok(c.uid("FETCH", "1:2,17", "(BODY.PEEK[])"))
    assert [d[1] for d in r if isinstance(d, tuple)] == \
        [bodies[1], bodies[2], bodies[17]]
    c.logout()
    # doveadm fetch searches the same way: its debug log names each
    # read-ahead (all but the one over the byte bound)
    r = stack.doveadm("-D fetch", "text", "mailbox", "INBOX",
                      user="alice")
    ahead = [int(x) for x in
             re.findall(r"mstore: read-ahead of uid (\d+) ", r.stderr)]
    assert sorted(ahead) == [u for u in bodies if u not in gone + [17]]
    for u in want:
        assert want[u].replace(b"\r\n", b"\n").decode() in r.stdout


@pytest.mark.dovecot(store_conf="max_frame = 64k", quota=None)
def test_replies_over_the_store_limit(stack):
    """A store whose replies are small (max_frame at its least, 64 KiB:
    32 KiB a reply, about 500 messages of FETCH_META): the first read of
    a 600-message folder asks FETCH_META in halves until the store
    answers; a change feed too long for one reply (MS_ESTATE) makes the
    next sync read the whole folder; the metadata of 600 new messages is
    asked in halves too; a body larger than a reply comes in chunks,
    also when read ahead.  No error anywhere (the fixture checks
    Dovecot's log)."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    for i in range(600):
        m.append(b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i))
    def meta_requests():
        return m.stats()["ops.op.fetch-meta"]
    before = meta_requests()
    c = stack.imap()
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"600"], data
    # 600 messages (39,600 bytes) refused once, then in halves of that
    # (1-300, 301-600) and the last request, to the end
    assert meta_requests() - before == 4
    uids = sorted(fetch_map(c, "1:*", "(FLAGS)"))
    assert uids == list(range(1, 601)), uids[:5]
    # a 40-byte keyword on all 600 by another client of the store: a
    # feed of 60 bytes a message, over 32 KiB
    kw = b"a-keyword-of-forty-bytes-for-the-feed-xx"
    m.store("INBOX", [(1, 600)], 0, 0, keywords=(kw,))
    ok(c.noop())
    d = fetch_map(c, "1:*", "(FLAGS)")
    assert len(d) == 600 and all(kw in v for v in d.values()), \
        [v for v in d.values() if kw not in v][:3]
    # 600 new messages since the session's last sync: the feed fits a
    # reply (18 bytes each), their metadata does not (66):
    # the new messages' FETCH_META is halved too
    for i in range(600):
        m.append(b"Subject: n%d\r\n\r\nnew %d\r\n" % (i, i))
    before = meta_requests()
    ok(c.noop())
    # refused once, then 300 and 300
    assert meta_requests() - before == 3
    uids = sorted(fetch_map(c, "1:*", "(FLAGS)"))
    assert uids == list(range(1, 1201)), (len(uids), uids[-3:])
    # bodies over one reply: 50 KiB, alone and among others read ahead
    big = b"Subject: big\r\n\r\n" + b"".join(
        b"line %05d of a message longer than one store reply\r\n" % i
        for i in range(900))
    assert len(big) > 40 << 10
    for _ in range(3):
        m.append(big)
    m.append(b"Subject: after\r\n\r\nsmall\r\n")
    ok(c.noop())
    got = [x[1] for x in ok(c.uid("FETCH", "1199:*", "(BODY.PEEK[])"))
           if isinstance(x, tuple)]
    assert len(got) == 6, len(got)
    assert got[2:5] == [big] * 3, [len(g) for g in got]
    assert got[5] == b"Subject: after\r\n\r\nsmall\r\n"
    m.close()
    c.logout()


def test_new_messages_in_many_ranges(stack):
    """The metadata of new messages comes in requests of at most 1,000
    UID ranges (MSTORE_META_RANGES): 1,200 new messages with a gap after
    each (every other one expunged before the session syncs) are asked
    in two requests, and the session shows exactly those."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.select("INBOX"))
    for i in range(2400):
        m.append(b"Subject: r%d\r\n\r\nranges %d\r\n" % (i, i))
    m.expunge("INBOX", [(u, u) for u in range(2, 2401, 2)])
    before = m.stats()["ops.op.fetch-meta"]
    ok(c.noop())
    assert m.stats()["ops.op.fetch-meta"] - before == 2
    uids = sorted(fetch_map(c, "1:*", "(FLAGS)"))
    assert uids == list(range(1, 2401, 2)), (len(uids), uids[:4])
    m.close()
    c.logout()


@pytest.mark.dovecot(store_conf="max_mailboxes = 4")
def test_mailbox_limit(stack):
    """The store's max_mailboxes (INBOX included): a CREATE past it is
    NO [LIMIT] with Dovecot's words for its own limit, the folder is in
    no listing (this session's, a new one's, the store's), a DELETE
    makes room, and other folders work on."""
    c = stack.imap()
    for name in ("One", "Two", "Three"):
        ok(c.create(name))
    typ, data = c.create("Four")
    assert typ == "NO", (typ, data)
    assert b"[LIMIT]" in data[0] and \
        b"Maximum number of mailboxes reached" in data[0], data
    def listed(conn):
        return sorted(l.rsplit(b" ", 1)[-1].strip(b'"').decode()
                      for l in ok(conn.list()))
    assert listed(c) == ["INBOX", "One", "Three", "Two"], listed(c)
    c2 = stack.imap()
    assert listed(c2) == ["INBOX", "One", "Three", "Two"], listed(c2)
    st = stack.doveadm("mailbox list", user="alice").stdout.split()
    assert sorted(st) == ["INBOX", "One", "Three", "Two"], st
    typ, _ = c2.select("Four")
    assert typ == "NO"
    # room again after a DELETE
    ok(c.delete("Two"))
    ok(c.create("Four"))
    stack.deliver("alice", "Four", MSG)
    typ, data = c2.select("Four")
    assert typ == "OK" and data == [b"1"], data
    # bob has a count of his own
    b = stack.imap("bob")
    ok(b.create("One"))
    for conn in (c, c2, b):
        conn.logout()


@pytest.mark.dovecot(store_conf="max_frame = 64k", quota=None)
def test_folder_list_over_one_store_reply(stack):
    """A user with more folders than one store reply holds (max_frame at
    its least: 32 KiB a reply; 500 folders of 86 bytes): the
    store's list comes in pages at LOGIN, and LIST shows every folder,
    with no error in Dovecot's log (the fixture checks)."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    names = ["folder-%04d-of-a-list-longer-than-reply" % i
             for i in range(500)]
    for n in names:
        m.mbox_create(n)
    before = m.stats()["ops.op.mbox-list"]
    c = stack.imap()
    listed = sorted(l.rsplit(b" ", 1)[-1].strip(b'"').decode()
                    for l in ok(c.list()))
    assert listed == sorted(names + ["INBOX"]), (len(listed), listed[:3])
    # refused whole, then two pages of 32 KiB, then the empty one
    assert m.stats()["ops.op.mbox-list"] - before == 4
    typ, data = c.select(names[499])
    assert typ == "OK", data
    m.close()
    c.logout()


def test_rename_to_own_parent_refused_everywhere(stack):
    """RENAME B/x B, where B is only the directory B/x is in: Dovecot
    refuses it (its directory of the new name is there, B/x in it), and
    the store must not have renamed the folder first: the folder stays
    B/x in both, with its message, and SELECT B/x works."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("B/x"))
    ok(c.append("B/x", None, None, MSG))
    typ, data = c.rename("B/x", "B")
    assert typ == "NO" and b"exists" in data[0], data
    assert sorted(m.mbox_list()) == ["B/x", "INBOX"], m.mbox_list()
    assert len(m.fetch_meta("B/x")) == 1
    ok(c.select("B/x"))
    assert uids(c) == [1]
    # another session sees the same
    c2 = stack.imap()
    typ, data = c2.status("B/x", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 1" in data[0], data


def test_rename_bare_parent_moves_children(stack):
    """RENAME B C, where B is only the directory of B/x and B/y/z (a
    \\Noselect folder): IMAP moves the children, Dovecot (on mdbox too)
    lists C/x and C/y/z, and the store must have them under the same
    names, with their messages and UIDs; the old names are gone in
    both.  A bare name with nothing under it is NONEXISTENT.  Before,
    the store answered "not found" and kept B/x while Dovecot showed
    C/x (test_folder_lifecycle_random, seed 37)."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("B/x"))
    ok(c.create("B/y/z"))
    ok(c.append("B/x", None, None, MSG))
    ok(c.append("B/y/z", None, None, MSG))
    ok(c.append("B/y/z", None, None, MSG))
    ok(c.rename("B", "C"))
    assert sorted(m.mbox_list()) == ["C/x", "C/y/z", "INBOX"], \
        m.mbox_list()
    assert [r["uid"] for r in m.fetch_meta("C/y/z")] == [1, 2]
    names = {re.search(rb'"/" "?([^"]*)"?$', line).group(1)
             for line in ok(c.list('""', "*"))}
    assert names == {b"INBOX", b"C", b"C/x", b"C/y", b"C/y/z"}, names
    c2 = stack.imap()
    ok(c2.select("C/y/z"))
    assert uids(c2) == [1, 2]
    typ, data = c2.select("B/x")
    assert typ == "NO", data
    typ, data = c2.rename("B", "D")
    assert typ == "NO" and b"NONEXISTENT" in data[0], data
    assert sorted(m.mbox_list()) == ["C/x", "C/y/z", "INBOX"]


def test_list_sees_folder_made_after_another_sessions_delete(stack):
    """Session b deletes folder B (its child B/x stays, B becomes a
    \\Noselect directory); session a lists; b then makes folder X2:
    a's next LIST shows it.  Dovecot's list index skipped its "rescan"
    mark when b's own view of the index, stale, still showed the mark
    of b's DELETE that a's LIST had consumed, and a never listed X2
    (Dovecot on mdbox does the same; test_folder_lifecycle_random,
    seed 97).  The plugin refreshes that view and marks again once its
    create, delete or rename is on disk."""
    a, b = stack.imap(), stack.imap()
    ok(b.create("B/x"))
    ok(b.create("B"))
    ok(a.list())
    ok(b.list())
    ok(b.delete("B"))
    ok(a.list())
    ok(b.create("X2"))
    names = {re.search(rb'"/" "?([^"]*)"?$', line).group(1)
             for line in ok(a.list('""', "*"))}
    assert names == {b"INBOX", b"B", b"B/x", b"X2"}, names
