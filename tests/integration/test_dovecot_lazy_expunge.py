"""Dovecot's lazy_expunge plugin over mstore: what a client expunges is
moved to a folder of its own instead of being lost, in both of the
plugin's forms: one folder (lazy_expunge = .EXPUNGED) and a hidden
namespace (lazy_expunge = expunged/, a folder per source folder).

The namespace form is where the store's names matter: a private
namespace beside the INBOX one keeps its prefix in the store
("expunged/INBOX"), or its folders would be the INBOX namespace's and an
expunged message would come back into the folder it left.  Every step
is checked in the store itself."""
import os
import re
import shutil

import pytest

import msproto
from test_dovecot_imap import MSG, ok

FLAGGED, DELETED = 1 << 2, 1 << 3


def dest_of(form, box):
    """Where lazy_expunge puts what is expunged from box (the store's
    name and the IMAP name are the same here)."""
    return ".EXPUNGED" if form == "mailbox" else "expunged/" + box


def body(i):
    return MSG.replace(b"hello", b"m%d" % i).replace(
        b"<1@", b"<m%d@" % i)


def subjects_in_store(m, box):
    return sorted(re.search(rb"Subject: (\S+)", m.fetch_body(box, r["uid"]))
                  .group(1).decode() for r in m.fetch_meta(box))


def meta_by_subject(m, box):
    out = {}
    for r in m.fetch_meta(box):
        s = re.search(rb"Subject: (\S+)", m.fetch_body(box, r["uid"]))
        out[s.group(1).decode()] = r
    return out


@pytest.mark.parametrize("form", [
    pytest.param(f, marks=pytest.mark.dovecot(lazy_expunge=f))
    for f in ("mailbox", "namespace")])
def test_lazy_expunge_keeps_what_is_expunged(stack, form):
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.append("INBOX", None, None, body(0)))
    ok(c.append("INBOX", r"(\Flagged $Work)", None, body(1)))
    ok(c.append("INBOX", None, None, body(2)))
    ok(c.create("Work"))
    ok(c.append("Work", None, None, body(3)))
    originals = {"m%d" % i: body(i) for i in range(4)}

    # EXPUNGE: the two messages leave INBOX and are in the lazy folder,
    # byte for byte, with their flags and keywords but not \Deleted
    ok(c.select("INBOX"))
    ok(c.store("1:2", "+FLAGS", r"(\Deleted)"))
    data = ok(c.expunge())
    assert len([d for d in data if d is not None]) == 2, data
    inbox_dest = dest_of(form, "INBOX")
    assert subjects_in_store(m, "INBOX") == ["m2"]
    assert subjects_in_store(m, inbox_dest) == ["m0", "m1"]
    kept = meta_by_subject(m, inbox_dest)
    for s, r in kept.items():
        assert m.fetch_body(inbox_dest, r["uid"]) == originals[s]
        assert r["flags"] & DELETED == 0, (s, r)
    assert kept["m1"]["flags"] & FLAGGED and \
        kept["m1"]["keywords"] == ["$Work"], kept["m1"]
    assert kept["m0"]["flags"] & FLAGGED == 0 and \
        kept["m0"]["keywords"] == [], kept["m0"]
    # the session's own view agrees
    ok(c.noop())
    typ, data = c.status(inbox_dest, "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 2" in data[0], data
    data = ok(c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert [d[1].strip() for d in data if isinstance(d, tuple)] == \
        [b"Subject: m2"]

    # MOVE is not an expunge worth keeping (only_last_instance): the
    # message is in Work, and only there
    ok(c.uid("MOVE", "3", "Work"))
    assert subjects_in_store(m, "INBOX") == []
    assert subjects_in_store(m, "Work") == ["m2", "m3"]
    assert subjects_in_store(m, inbox_dest) == ["m0", "m1"]
    c.logout()

    # doveadm expunge goes the same way
    stack.doveadm("expunge", "mailbox", "Work", "all", user="alice")
    work_dest = dest_of(form, "Work")
    assert subjects_in_store(m, "Work") == []
    if form == "mailbox":
        assert subjects_in_store(m, work_dest) == ["m0", "m1", "m2", "m3"]
    else:
        assert subjects_in_store(m, work_dest) == ["m2", "m3"]
        assert subjects_in_store(m, inbox_dest) == ["m0", "m1"]

    # and POP3's DELE, at QUIT
    stack.deliver("alice", "INBOX", body(4))
    p = stack.pop3()
    assert p.stat()[0] == 1
    p.dele(1)
    p.quit()
    assert subjects_in_store(m, "INBOX") == []
    assert "m4" in subjects_in_store(m, inbox_dest)

    # what is expunged in the lazy folder itself is gone for good, and
    # not moved into a folder of that folder
    c = stack.imap()
    before = len(m.fetch_meta(inbox_dest))
    ok(c.select(inbox_dest))
    typ, data = c.search(None, "SUBJECT", "m0")
    assert typ == "OK" and len(data[0].split()) == 1, data
    ok(c.store(data[0].decode(), "+FLAGS", r"(\Deleted)"))
    ok(c.expunge())
    assert len(m.fetch_meta(inbox_dest)) == before - 1
    assert "m0" not in subjects_in_store(m, inbox_dest)
    names = b" ".join(ok(c.list()))
    if form == "namespace":
        # the hidden namespace is not listed, and the INBOX namespace
        # does not show the store's expunged/ folders as its own
        assert b"expunged" not in names, names
        typ, data = c.status("expunged/expunged/INBOX", "(MESSAGES)")
        assert typ == "NO", data
    else:
        assert b".EXPUNGED" in names
        assert b".EXPUNGED/" not in names, names
    c.logout()

    # DELETE of a folder with mail: lazy_expunge keeps its messages as
    # it would on EXPUNGE (each is expunged before the store deletes the
    # folder), then the folder is gone
    c = stack.imap()
    ok(c.create("Old"))
    ok(c.append("Old", r"(\Seen)", None, body(5)))
    ok(c.delete("Old"))
    c.logout()
    with pytest.raises(msproto.Error):
        m.mbox_status("Old")
    old_dest = dest_of(form, "Old")
    kept = meta_by_subject(m, old_dest)
    assert "m5" in kept and kept["m5"]["flags"] & DELETED == 0, kept
    assert m.fetch_body(old_dest, kept["m5"]["uid"]) == body(5)

    # INBOX is never gone from the store: deleting it (as doveadm backup
    # does) empties it, and its messages are kept the same way
    stack.deliver("alice", "INBOX", body(6))
    stack.doveadm("mailbox delete", "INBOX", user="alice")
    assert subjects_in_store(m, "INBOX") == []
    assert "m6" in subjects_in_store(m, inbox_dest)

    # the Dovecot indexes lost (the namespace's own directory too): the
    # lazy folders come back from the store with the same UIDs
    uids = {b: [r["uid"] for r in m.fetch_meta(b)]
            for b in {inbox_dest, work_dest}}
    shutil.rmtree(stack.index_dir("alice"))
    if form == "namespace":
        shutil.rmtree(os.path.join(stack.home("alice"), "mstore-expunged"))
    c = stack.imap()
    for b, want in uids.items():
        ok(c.select(b))
        data = ok(c.uid("FETCH", "1:*", "(UID)"))
        got = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data
               if d is not None]
        assert got == want, (b, got, want)
    if form == "namespace":
        names = b" ".join(ok(c.list()))
        assert b"expunged" not in names, names
    c.logout()
    m.close()


@pytest.mark.dovecot(lazy_expunge="namespace")
def test_second_namespace_folders_are_its_own(stack):
    """A folder made in the expunged/ namespace is a store folder of its
    own, not the INBOX namespace's folder of the same name, and the
    INBOX namespace does not list it (nor restore it after its index is
    lost)."""
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Work"))
    ok(c.append("Work", None, None, body(0)))
    ok(c.create("expunged/Work"))
    ok(c.append("expunged/Work", None, None, body(1)))
    assert subjects_in_store(m, "Work") == ["m0"]
    assert subjects_in_store(m, "expunged/Work") == ["m1"]
    typ, data = c.status("Work", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    typ, data = c.status("expunged/Work", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    c.logout()
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    names = b" ".join(ok(c.list()))
    assert b"Work" in names and b"expunged" not in names, names
    assert not os.path.exists(os.path.join(stack.index_dir("alice"),
                                           "mailboxes", "expunged"))
    typ, data = c.status("expunged/Work", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 1" in data[0], data
    # DELETE of Work: its message goes where an EXPUNGE would put it
    # (lazy_expunge sees each message expunged before the store deletes
    # the folder), next to what was there; the folder is gone
    ok(c.delete("Work"))
    assert subjects_in_store(m, "expunged/Work") == ["m0", "m1"]
    with pytest.raises(msproto.Error):
        m.mbox_status("Work")
    c.logout()
    m.close()


@pytest.mark.dovecot(dovecot_conf="""
namespace compat {
  prefix = INBOX.
  separator = .
  alias_for =
  hidden = yes
  list = no
  subscriptions = no
}
""")
def test_alias_namespace_is_the_inbox_namespace(stack):
    """The other side of the rule: a namespace that is an alias of the
    INBOX one (alias_for, a Courier-style INBOX. prefix) has no folders
    of its own.  Dovecot hands its names to the INBOX namespace before
    the storage sees them, so they are the same store folders; and the
    INBOX namespace keeps the store's folders under the alias's prefix
    (INBOX/Sub, a child of INBOX), which come back after the index is
    lost."""
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Work/Sub"))
    ok(c.append("INBOX.Work.Sub", None, None, body(0)))
    assert subjects_in_store(m, "Work/Sub") == ["m0"]
    ok(c.select("INBOX.Work.Sub"))
    ok(c.store("1", "+FLAGS", r"(\Flagged)"))
    assert m.fetch_meta("Work/Sub")[0]["flags"] & FLAGGED
    typ, data = c.status("Work/Sub", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 1" in data[0], data
    names = b" ".join(ok(c.list()))
    assert b"INBOX." not in names, names
    ok(c.create("INBOX/Sub"))
    ok(c.append("INBOX/Sub", None, None, body(1)))
    c.logout()
    shutil.rmtree(stack.index_dir("alice"))
    c = stack.imap()
    names = b" ".join(ok(c.list()))
    assert b'"INBOX/Sub"' in names or b" INBOX/Sub" in names, names
    typ, data = c.status("INBOX/Sub", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 1" in data[0], data
    c.logout()
    m.close()


@pytest.mark.dovecot(lazy_expunge="mailbox")
def test_delete_while_mail_arrives_loses_nothing(stack):
    """DELETE of a folder that mail keeps arriving in.  The plugin
    expunges the folder's messages through Dovecot (lazy_expunge keeps
    them), then asks the store to delete the folder only if it is
    empty, with nothing on its way in; a message delivered in between
    makes it expunge again.  So every message the store answered OK is
    in the lazy folder, or in the folder when DELETE gave up (NO
    [INUSE], the folder still there); none is deleted unseen.  A
    delivery while the folder is gone is refused (no such mailbox)."""
    import threading
    import time
    c = stack.imap()
    acked, refused, errors = [], [], []
    outcomes = []
    n = [0]

    def deliver(stop):
        m = msproto.Client(stack.p("mstored.sock"), user="alice")
        while not stop.is_set() and n[0] < 4000:
            n[0] += 1
            i = n[0]
            try:
                m.append(body(i), mailbox="Work")
                acked.append("m%d" % i)
            except msproto.Error as e:
                if e.status != -10012:  # MS_ENOTFOUND
                    errors.append(str(e))
                refused.append(i)
            time.sleep(0.01)
        m.close()

    for rnd in range(12):
        typ, data = c.create("Work")
        assert typ == "OK" or b"exists" in data[0], data
        stop = threading.Event()
        t = threading.Thread(target=deliver, args=(stop,))
        t.start()
        time.sleep(0.05)
        typ, data = c.delete("Work")
        outcomes.append(typ)
        if typ != "OK":
            assert b"INUSE" in data[0], data
        time.sleep(0.01)
        stop.set()
        t.join(30)
        assert not t.is_alive()
    assert not errors, errors
    assert "OK" in outcomes, outcomes
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    kept = subjects_in_store(m, ".EXPUNGED")
    try:
        left = subjects_in_store(m, "Work")
    except msproto.Error:
        left = []
    assert len(acked) > 50, len(acked)
    assert sorted(kept + left) == sorted(acked), (
        len(acked), len(kept), len(left),
        sorted(set(acked) - set(kept) - set(left))[:10])
    print("DELETE outcomes", outcomes, "acked", len(acked),
          "refused", len(refused), "kept", len(kept), "left", len(left))
