"""doveadm over the mstore storage: mailbox list/create/delete/status,
fetch, search, flags, expunge, force-resync, and quota with Dovecot's
quota plugin (count backend)."""
import re
import shutil

from test_dovecot_imap import MSG, MIME, ok, raw


def test_doveadm_mailbox_and_mail_commands(stack):
    d = stack.doveadm
    d("mailbox create", "Projects", "Projects/Alpha", user="alice")
    boxes = d("mailbox list", user="alice").stdout.split()
    assert {"INBOX", "Projects", "Projects/Alpha"} <= set(boxes)
    for m in (MSG, MIME, MSG):
        stack.deliver("alice", "Projects/Alpha", m)
    st = d("mailbox status", "messages uidnext uidvalidity unseen vsize "
           "guid highestmodseq", "Projects/Alpha", user="alice").stdout
    assert "messages=3" in st and "uidnext=4" in st and "unseen=3" in st
    vsize = int(re.search(r"vsize=(\d+)", st).group(1))
    assert vsize == 2 * len(MSG) + len(MIME)
    out = d("fetch", "uid guid size.physical size.virtual date.received "
            "text", "mailbox", "Projects/Alpha", "uid", "2",
            user="alice").stdout
    assert "size.physical: %d" % len(MIME) in out
    assert re.search(r"guid: [0-9a-f]{32}", out)
    assert "Gr\u00fc\u00dfe" in out
    out = d("search", "mailbox", "Projects/Alpha", "subject", "mime",
            user="alice").stdout.split()
    assert out[-1] == "2"
    d("flags add", "\\Seen $Done", "mailbox", "Projects/Alpha", "uid",
      "1:2", user="alice")
    d("flags remove", "$Done", "mailbox", "Projects/Alpha", "uid", "2",
      user="alice")
    # what the store has, through a fresh index
    view = stack.store_view("alice", "Projects/Alpha")
    assert view[1] == ["$Done", "\\Seen"] and view[2] == ["\\Seen"]
    assert view[3] == []
    d("expunge", "mailbox", "Projects/Alpha", "seen", user="alice")
    assert sorted(stack.store_view("alice", "Projects/Alpha")) == [3]
    # IMAP agrees
    c = stack.imap()
    ok(c.select("Projects/Alpha"))
    assert ok(c.uid("SEARCH", None, "ALL"))[0] == b"3"
    c.logout()
    d("mailbox delete", "Projects/Alpha", user="alice")
    boxes = d("mailbox list", user="alice").stdout.split()
    assert "Projects/Alpha" not in boxes
    # and the store: a fresh index does not bring it back
    fresh = stack.doveadm_fresh("mailbox list", user="alice").split()
    assert "Projects/Alpha" not in fresh and "Projects" in fresh


def test_doveadm_force_resync(stack):
    for i in range(3):
        stack.deliver("alice", "INBOX", MSG)
    c = stack.imap()
    ok(c.select("INBOX"))
    ok(c.store("1", "+FLAGS", r"(\Answered)"))
    c.logout()
    stack.doveadm("force-resync", "*", user="alice")
    view = stack.store_view("alice", "INBOX")
    c = stack.imap()
    ok(c.select("INBOX"))
    data = ok(c.uid("FETCH", "1:*", "(FLAGS)"))
    assert len(data) == 3 and b"\\Answered" in data[0]
    assert view[1] == ["\\Answered"]
    c.logout()


def test_quota_count_backend(stack):
    for i in range(4):
        stack.deliver("bob", "INBOX", MSG)
    out = stack.doveadm("quota get", user="bob").stdout
    m = re.search(r"STORAGE\s+(\d+)", out)
    n = re.search(r"MESSAGE\s+(\d+)", out)
    assert n and int(n.group(1)) == 4, out
    assert m and int(m.group(1)) == (4 * len(MSG) + 1023) // 1024, out
    stack.doveadm("quota recalc", user="bob")
    c = stack.imap("bob")
    line, untagged = raw(c, "GETQUOTAROOT INBOX")
    assert b" OK" in line, (line, untagged)
    assert any(b"MESSAGE 4" in u for u in untagged), untagged
    c.logout()


def test_folder_deleted_elsewhere(stack):
    """A folder deleted in the store by another host (here: doveadm with
    its own, fresh index) leaves this host's list at the next login."""
    c = stack.imap()
    ok(c.create("Gone"))
    ok(c.create("Kept"))
    c.logout()
    stack.doveadm_fresh("mailbox delete", "Gone", user="alice")
    c = stack.imap()
    names = b" ".join(ok(c.list()))
    assert b"Gone" not in names and b"Kept" in names
    typ, _ = c.select("Gone")
    assert typ == "NO"
    c.logout()


def test_store_quota_refuses_append(stack):
    """The store's own quota (mstore quota USER BYTES MESSAGES) refuses
    an APPEND or COPY past it: IMAP says NO [OVERQUOTA]."""
    stack.mstore("quota", "bob", str(len(MSG) * 2 + 10), "0")
    c = stack.imap("bob")
    ok(c.append("INBOX", None, None, MSG))
    ok(c.append("INBOX", None, None, MSG))
    line, _ = raw(c, "APPEND INBOX {%d+}\r\n" % len(MSG) +
                  MSG.decode())
    assert b"NO [OVERQUOTA]" in line, line
    ok(c.select("INBOX"))
    ok(c.create("Other"))
    line, _ = raw(c, "UID COPY 1 Other")
    assert b"NO [OVERQUOTA]" in line, line
    assert ok(c.uid("SEARCH", None, "ALL"))[0] == b"1 2"
    c.logout()


def test_store_quota_refuses_copy_fresh_index(stack):
    """A COPY the store's quota refuses in the first session of a new
    index cache: NO [OVERQUOTA] with the reason as clean text (the
    copy must not leave a cached size in the source's transaction,
    whose commit would free the error string that COPY sends)."""
    stack.mstore("mailbox", "add", "bob", "Other")
    for _ in range(2):
        stack.deliver("bob", "INBOX", MSG)
    stack.mstore("quota", "bob", str(len(MSG) * 2 + 10), "0")
    for _ in range(3):
        shutil.rmtree(stack.index_dir("bob"), ignore_errors=True)
        c = stack.imap("bob")
        ok(c.select("INBOX"))
        for cmd in ("COPY 1 Other", "UID COPY 1:* Other", "MOVE 2 Other"):
            line, _ = raw(c, cmd)
            text = line.split(b" ", 1)[1].rstrip(b"\r\n")
            assert text.startswith(b"NO [OVERQUOTA] Quota exceeded"), line
            assert all(32 <= b < 127 for b in text), line
        c.logout()
    assert sorted(stack.store_view("bob", "INBOX")) == [1, 2]
    assert stack.store_view("bob", "Other") == {}


def test_mailbox_delete_empty_only(stack):
    """doveadm mailbox delete -e (what dsync asks for too) refuses a
    folder that has mail before the store deletes anything: the folder
    and its message stay; emptied, it goes."""
    import msproto
    d = stack.doveadm
    d("mailbox create", "Work", user="alice")
    stack.deliver("alice", "Work", MSG)
    r = d("mailbox delete", "-e", "Work", user="alice", check=False)
    assert r.returncode != 0 and "isn't empty" in r.stderr, r
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    assert [x["uid"] for x in m.fetch_meta("Work")] == [1]
    assert "Work" in d("mailbox list", user="alice").stdout.split()
    d("expunge", "mailbox", "Work", "all", user="alice")
    d("mailbox delete", "-e", "Work", user="alice")
    try:
        m.mbox_status("Work")
        raise AssertionError("Work is still in the store")
    except msproto.Error:
        pass
    assert "Work" not in d("mailbox list", user="alice").stdout.split()
    m.close()


def test_rename_under_itself_refused(stack):
    """doveadm mailbox rename B B/y: refused with IMAP's words ("under
    its own child": IMAP's RENAME checks that itself, doveadm does not),
    nothing renamed in the store or in Dovecot.  Before, the store's
    refusal came back as "RENAME: refused by the store"
    (test_folder_lifecycle_random with doveadm, seed 4)."""
    import msproto
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("B/x"))
    ok(c.create("B"))
    for new in ("B/y", "B/x"):
        r = stack.doveadm("mailbox rename", "B", new, user="alice",
                          check=False)
        assert r.returncode != 0, r
        assert "Can't rename mailbox under its own child" in r.stderr, r
    assert sorted(m.mbox_list()) == ["B", "B/x", "INBOX"]
    names = {re.search(rb'"/" "?([^"]*)"?$', line).group(1)
             for line in ok(c.list('""', "*"))}
    assert names == {b"INBOX", b"B", b"B/x"}, names
