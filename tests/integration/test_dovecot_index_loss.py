"""Dovecot's index is only a cache: deleting the whole index directory
loses nothing.  The next login rebuilds folders, subscriptions, UIDs,
flags, keywords and UIDVALIDITY from the store."""
import imaplib
import re
import shutil

import pytest

from test_dovecot_imap import MSG, fetch_map, ok, uids  # noqa: F401

imaplib.Commands.setdefault("ENABLE", ("AUTH",))


def state(c, box):
    typ, data = c.select(box)
    assert typ == "OK", data
    uidv = int(c.untagged_responses["UIDVALIDITY"][-1])
    flags = {}
    for uid, line in fetch_map(c, "1:*", "(UID FLAGS)").items():
        f = re.search(rb"FLAGS \(([^)]*)\)", line).group(1).split()
        flags[uid] = sorted(x for x in f if x != b"\\Recent")
    return uidv, flags


def test_index_loss(stack):
    c = stack.imap()
    ok(c.create("Archive/2023"))
    ok(c.subscribe("Archive/2023"))
    for i in range(6):
        ok(c.append("INBOX", None, None, MSG))
        ok(c.append("Archive/2023", r"(\Answered)", None, MSG))
    ok(c.select("INBOX"))
    ok(c.store("2", "+FLAGS", r"(\Seen $Important)"))
    ok(c.store("3,6", "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    before = {b: state(c, b) for b in ("INBOX", "Archive/2023")}
    ok(c.select("Archive/2023"))
    status = ok(c.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY)"))
    assert b"MESSAGES 4" in status[0] and b"UIDNEXT 7" in status[0]
    c.logout()

    # between sessions (a session open meanwhile keeps its unlinked
    # index files and is confused by the new ones: Dovecot's own
    # behaviour, see docs/dovecot-plugin.md)
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    lsub = b" ".join(ok(c.lsub()))
    assert b"Archive/2023" in lsub
    assert ok(c.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY)")) == status
    after = {b: state(c, b) for b in ("INBOX", "Archive/2023")}
    assert after == before
    # the new index works on: a new message gets the next UID
    stack.deliver("alice", "INBOX", MSG)
    ok(c.select("INBOX"))
    assert uids(c) == [1, 2, 4, 5, 7]  # 3 and 6 were expunged
    c.logout()
    # and once more, with POP3 and doveadm as the first to come back
    shutil.rmtree(stack.index_dir("alice"))
    out = stack.doveadm("mailbox status", "messages uidvalidity", "INBOX",
                        user="alice").stdout
    assert "messages=5" in out
    assert "uidvalidity=%d" % before["INBOX"][0] in out


def test_index_loss_first_command(stack):
    """The session after the loss starts with a command on a folder, not
    with a listing: SELECT, STATUS or APPEND of a folder the store has
    finds it (the plugin completes the local list from the store when a
    mailbox is missing, not only at the first LIST), with its UIDVALIDITY,
    messages and subscription."""
    c = stack.imap()
    ok(c.create("Archive/2023"))
    ok(c.subscribe("Archive/2023"))
    for i in range(2):
        ok(c.append("Archive/2023", r"(\Flagged)", None, MSG))
    before = state(c, "Archive/2023")
    c.logout()

    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    assert state(c, "Archive/2023") == before
    assert b"Archive/2023" in b" ".join(ok(c.lsub()))
    c.logout()

    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    st = ok(c.status("Archive/2023", "(MESSAGES UIDNEXT UIDVALIDITY)"))
    assert b"MESSAGES 2" in st[0] and b"UIDNEXT 3" in st[0]
    assert b"UIDVALIDITY %d" % before[0] in st[0]
    c.logout()

    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    typ, data = c.append("Archive/2023", None, None, MSG)
    assert typ == "OK", data
    assert b"[APPENDUID %d 3]" % before[0] in data[0], data
    c.logout()


def three_in(stack, box):
    """A new folder with 3 messages, seen (and so indexed) by a session:
    its UIDVALIDITY."""
    c = stack.imap()
    ok(c.create(box))
    for i in range(3):
        ok(c.append(box, None, None, MSG))
    uidv, msgs = state(c, box)
    assert sorted(msgs) == [1, 2, 3]
    c.logout()
    return uidv


def test_folder_replaced_elsewhere(stack):
    """The store's folder of a name is deleted and made again by another
    host (a new UIDVALIDITY): this host's index of it is reset, and
    IMAP shows the new folder's messages under the new UIDVALIDITY."""
    old_uidv = three_in(stack, "Swap")
    stack.doveadm_fresh("mailbox delete", "Swap", user="alice")
    stack.doveadm_fresh("mailbox create", "Swap", user="alice")
    stack.deliver("alice", "Swap", MSG)
    c = stack.imap()
    new_uidv, new = state(c, "Swap")
    assert new_uidv != old_uidv
    assert sorted(new) == [1]
    c.logout()


def test_folder_replaced_same_uidvalidity_and_modseq(stack):
    """The store's folder of a name is renamed away and another one made
    under the name with the same UIDVALIDITY and HIGHESTMODSEQ (what a
    migration that sets UIDVALIDITY can do): the only thing that tells
    the two apart is the store's mailbox id, which the open compares
    with the one this host's index is of.  The next SELECT shows the new
    folder (empty), not the old one's cached messages."""
    import struct
    import msproto
    old_uidv = three_in(stack, "Same")
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    before = m.mbox_status("Same")
    assert before["uidvalidity"] == old_uidv

    def name(s):
        b = s.encode()
        return struct.pack("<H", len(b)) + b
    m.call(22, name("Same") + name("Gone"))          # MBOX_RENAME
    m.call(21, name("Same") + struct.pack("<I", 0))  # MBOX_CREATE
    after = m.mbox_update("Same", uidvalidity=before["uidvalidity"],
                          highestmodseq=before["highestmodseq"])
    m.close()
    assert after["id"] != before["id"]
    assert (after["uidvalidity"], after["highestmodseq"]) == \
        (before["uidvalidity"], before["highestmodseq"])
    c = stack.imap()
    typ, data = c.select("Same")
    assert typ == "OK" and data == [b"0"], data
    assert ok(c.status("Gone", "(MESSAGES)"))[0].endswith(b"(MESSAGES 3)")
    c.logout()


def modseqs(c, box):
    ok(c.select(box))
    st = ok(c.status(box, "(HIGHESTMODSEQ)"))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", st[0]).group(1))
    per = {}
    for uid, line in fetch_map(c, "1:*", "(UID MODSEQ)").items():
        per[uid] = int(re.search(rb"MODSEQ \((\d+)\)", line).group(1))
    return hms, per


def test_modseq_never_goes_back(stack):
    """CONDSTORE/QRESYNC: after the index is lost, HIGHESTMODSEQ and each
    message's MODSEQ are not lower than before (Dovecot's MODSEQs follow
    the store's).  An EXPUNGE counts two in Dovecot's index and one in
    the store: the store's HIGHESTMODSEQ is raised after it, not left
    below the index's."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c._simple_command("ENABLE", "CONDSTORE"))
    for i in range(8):
        ok(c.append("INBOX", None, None, MSG))
    ok(c.select("INBOX"))
    ok(c.store("1:3", "+FLAGS", r"(\Seen $A $B)"))
    ok(c.store("2", "FLAGS", r"(\Answered $C)"))
    ok(c.store("4", "-FLAGS", r"(\Seen)"))
    ok(c.store("5", "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    assert (modseqs(c, "INBOX")[0] <=
            m.mbox_status("INBOX")["highestmodseq"])
    stack.deliver("alice", "INBOX", MSG)
    ok(c.noop())
    ok(c.create("Copy"))
    ok(c.uid("COPY", "1:4", "Copy"))
    stack.doveadm("flags add", "\\Flagged $D", "mailbox", "INBOX", "all",
                  user="alice")
    ok(c.noop())
    before = {b: modseqs(c, b) for b in ("INBOX", "Copy")}
    for b in before:
        assert before[b][0] <= m.mbox_status(b)["highestmodseq"], b
    m.close()
    c.logout()
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    ok(c._simple_command("ENABLE", "CONDSTORE"))
    after = {b: modseqs(c, b) for b in ("INBOX", "Copy")}
    for b in before:
        assert after[b][0] >= before[b][0], (b, before[b][0], after[b][0])
        assert sorted(after[b][1]) == sorted(before[b][1])
        for uid, m in before[b][1].items():
            assert after[b][1][uid] >= m, (b, uid, m, after[b][1][uid])
    c.logout()


def listed(c):
    """LIST's lines, sorted, without \\Marked and \\UnMarked: hints
    from the list index's figures, which a lost index has yet to take."""
    return sorted(re.sub(rb" \\(Un)?Marked", b"", x, flags=re.I)
                  for x in ok(c.list()))


def test_index_loss_many_folders(stack):
    """A user with hundreds of folders, nested, some subscribed, some
    with mail: after the loss the first LIST brings every one back (the
    plugin makes their directories and no more; each one's index comes
    at its first open), LSUB the subscribed ones, and the folders with
    mail show the same UIDVALIDITY, UIDs and flags."""
    c = stack.imap()
    names = []
    for y in range(2010, 2025):
        for m in range(1, 21):
            names.append("Archive/%d/%02d" % (y, m))
    for n in names:
        ok(c.create(n))
    subscribed = names[::3]
    for n in subscribed:
        ok(c.subscribe(n))
    with_mail = [names[0], names[150], names[-1]]
    for n in with_mail:
        for i in range(3):
            ok(c.append(n, r"(\Seen)" if i else None, None, MSG))
    before = {n: state(c, n) for n in with_mail}
    listed_before = listed(c)
    c.logout()
    guids = {n: stack.doveadm("mailbox status", "guid", n,
                              user="alice").stdout
             for n in with_mail + [names[7]]}

    shutil.rmtree(stack.index_dir("alice"))
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    metas = m.stats()["ops.op.fetch-meta"]
    c = stack.imap()
    assert listed(c) == listed_before
    # the listing opened no folder: no message was asked of the store
    # (Dovecot's list index asks each new folder's GUID: one request)
    assert m.stats()["ops.op.fetch-meta"] == metas
    lsub = {line.rsplit(b" ", 1)[-1].strip(b'"').decode()
            for line in ok(c.lsub())}
    assert lsub == set(subscribed)
    assert {n: state(c, n) for n in with_mail} == before
    # one never opened before the loss nor after it: empty and usable
    typ, data = c.select(names[7])
    assert typ == "OK" and data == [b"0"], data
    ok(c.append(names[7], None, None, MSG))
    ok(c.select(names[7]))
    assert uids(c) == [1]
    c.logout()
    # the folders' GUIDs, as Dovecot's list index and doveadm see them
    for n, g in guids.items():
        assert stack.doveadm("mailbox status", "guid", n,
                             user="alice").stdout == g, n
    m.close()


def lsub_names(c):
    return sorted(line.rsplit(b" ", 1)[-1].strip(b'"').decode()
                  for line in ok(c.lsub()) if line)


def test_index_loss_keeps_subscriptions_without_folder(stack):
    """Subscriptions are by name: a RENAME or DELETE of a subscribed
    folder leaves the name subscribed (Dovecot's rule, on mdbox too).
    After an index loss LSUB is what it was, those names included: they
    come back from the store's list (MBOX_SUBS)."""
    c = stack.imap()
    for name in ("Work", "Work/Sub", "Old", "Keep"):
        ok(c.create(name))
        ok(c.subscribe(name))
    ok(c.rename("Work", "Job"))
    ok(c.delete("Old"))
    ok(c.subscribe("Job"))
    before = lsub_names(c)
    assert before == ["Job", "Keep", "Old", "Work", "Work/Sub"], before
    c.logout()

    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    assert lsub_names(c) == before
    # the folders came back with them
    names = b" ".join(ok(c.list()))
    assert b"Job/Sub" in names and b"Keep" in names
    ok(c.unsubscribe("Work"))
    c.logout()
    # an unsubscribe after the restore reaches the store: the next loss
    # brings back the rest only
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    assert lsub_names(c) == ["Job", "Keep", "Old", "Work/Sub"]
    c.logout()


def test_index_loss_subscriptions_inbox_only(stack):
    """The same for a user left with INBOX alone: its restore brings the
    subscription list back too."""
    c = stack.imap()
    ok(c.create("Old"))
    ok(c.subscribe("Old"))
    ok(c.subscribe("INBOX"))
    ok(c.delete("Old"))
    assert lsub_names(c) == ["INBOX", "Old"]
    c.logout()
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    assert lsub_names(c) == ["INBOX", "Old"]
    c.logout()


METADATA_CONF = """
mail_attribute_dict = file:%h/dovecot-attributes
protocol imap {
  imap_metadata = yes
}
"""


@pytest.mark.dovecot(dovecot_conf=METADATA_CONF)
def test_metadata_of_a_folder_not_listed_here(stack):
    """IMAP METADATA asks whether a folder exists without opening it.  A
    folder the store has and the local list lacks (the index directory
    lost; a folder made through the store by another host or a tool
    while a session is logged in) is found in the store, as at an open:
    GETMETADATA and SETMETADATA answer instead of "Mailbox doesn't
    exist", and a folder the store lacks too is still refused."""
    from test_dovecot_imap import raw
    c = stack.imap()
    ok(c.create("Work"))
    line, _ = raw(c, 'SETMETADATA Work (/private/comment "my work")')
    assert b" OK " in line, line
    c.logout()
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    line, untagged = raw(c, "GETMETADATA Work /private/comment")
    assert b" OK " in line, line
    assert b"my work" in b"".join(untagged), untagged
    # made through the store while this session is logged in
    stack.mstore("mailbox", "add", "alice", "Made/Elsewhere")
    line, _ = raw(c, 'SETMETADATA Made/Elsewhere (/private/comment "x")')
    assert b" OK " in line, line
    line, untagged = raw(c, "GETMETADATA Made/Elsewhere /private/comment")
    assert b" OK " in line and b"x)" in b"".join(untagged), \
        (line, untagged)
    line, _ = raw(c, "GETMETADATA Nowhere /private/comment")
    assert b" NO " in line and b"doesn't exist" in line, line
    c.logout()
