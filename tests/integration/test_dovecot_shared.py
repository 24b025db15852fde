"""Shared and public folders: Dovecot's ACL plugin with a shared
namespace (shared/USER/, another user's mstore folders) and a public one
(Public/, the store user named by plugin { mstore_public_user }).  The
mail there is the owner's in the store: what another user reads, copies,
appends, flags and expunges through them is checked against the store,
with a client of the store's own protocol."""
import subprocess
import time

import pytest

import msproto
from test_dovecot_imap import MSG, MIME, idle_done, idle_line, ok

SEEN, FLAGGED, DELETED = 1 << 1, 1 << 2, 1 << 3


def bodies(m, mailbox):
    return {r["uid"]: m.fetch_body(mailbox, r["uid"])
            for r in m.fetch_meta(mailbox)}


def imap_bodies(c):
    data = ok(c.uid("FETCH", "1:*", "(BODY.PEEK[])"))
    out = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(item[0].split(b"UID ")[1].split()[0])
            out[uid] = item[1]
    return out


@pytest.mark.dovecot(shared=True)
def test_shared_namespace_is_the_owners_mail(stack):
    sock = stack.p("mstored.sock")
    ma = msproto.Client(sock, user="alice")
    mb = msproto.Client(sock, user="bob")
    a = stack.imap("alice")
    for i in range(3):
        ok(a.append("INBOX", None, None, MSG.replace(b"hello",
                                                     b"alice %d" % i)))
    ok(a.create("Projects"))
    ok(a.append("Projects", None, None, MIME))
    ok(a._simple_command("SETACL", "INBOX", "bob", "lrs"))
    ok(a._simple_command("SETACL", "Projects", "bob", "lrswipkxte"))
    b = stack.imap("bob")
    ok(b.append("INBOX", None, None, MSG.replace(b"hello", b"bob's own")))

    # bob sees alice's folders as alice's store has them; the listing
    # costs his session one store connection for alice's folders (made
    # at its first request), none for Dovecot's other namespace of her
    conns = ma.stats()["srv.connections"]
    names = [x.decode() for x in ok(b.list('""', '"shared/*"'))]
    assert any(x.endswith(" shared/alice/Projects") for x in names), names
    assert ma.stats()["srv.connections"] == conns + 1
    typ, data = b.select('"shared/alice/INBOX"')
    assert typ == "OK" and data == [b"3"], data
    assert b.response("UIDVALIDITY")[1] == [
        str(ma.mbox_status("INBOX")["uidvalidity"]).encode()]
    alice_inbox = bodies(ma, "INBOX")
    assert imap_bodies(b) == alice_inbox
    assert b"bob's own" not in b"".join(alice_inbox.values())

    # 'lrs': \Seen is bob's own (INDEXPVT); any other flag is left out
    # (Dovecot's ACL answers OK and changes nothing)
    ok(b.uid("STORE", "1", "+FLAGS", "(\\Flagged)"))
    ok(b.uid("STORE", "1", "+FLAGS", "(\\Seen)"))
    data = ok(b.uid("FETCH", "1", "(FLAGS)"))
    assert b"\\Seen" in data[0] and b"\\Flagged" not in data[0], data
    assert all(r["flags"] & (SEEN | FLAGGED) == 0
               for r in ma.fetch_meta("INBOX"))

    # a copy into bob's own INBOX is his, by value; alice's stays
    ok(b.uid("COPY", "1:3", "INBOX"))
    mine = bodies(mb, "INBOX")
    assert len(mine) == 4
    assert sorted(mine[u] for u in (2, 3, 4)) == sorted(alice_inbox.values())
    assert len(ma.fetch_meta("INBOX")) == 3

    # 'lrswipkxte' on Projects: bob appends, flags and expunges there,
    # in alice's store
    ok(b.select('"shared/alice/Projects"'))
    ok(b.append('"shared/alice/Projects"', None, None,
                MSG.replace(b"hello", b"from bob")))
    assert sorted(bodies(ma, "Projects")) == [1, 2]
    assert b"from bob" in bodies(ma, "Projects")[2]
    ok(b.uid("STORE", "2", "+FLAGS", "(\\Flagged)"))
    ok(b.noop())
    flags = {r["uid"]: r["flags"] for r in ma.fetch_meta("Projects")}
    assert flags[2] & FLAGGED and not flags[1] & FLAGGED
    ok(b.uid("STORE", "1", "+FLAGS", "(\\Deleted)"))
    ok(b.expunge())
    assert [r["uid"] for r in ma.fetch_meta("Projects")] == [2]

    # alice's own session sees what bob did
    typ, data = a.select("Projects")
    assert typ == "OK" and data == [b"1"], data
    data = ok(a.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])"))
    assert b"from bob" in data[0][1] and b"\\Flagged" in data[0][0]
    # and bob's session on it, alice's changes
    ok(a.uid("STORE", "2", "-FLAGS", "(\\Flagged)"))
    data = ok(b.uid("FETCH", "2", "(FLAGS)"))
    assert b"\\Flagged" not in data[0], data
    # IDLE in alice's INBOX is woken by her store's change notices
    ok(b.select('"shared/alice/INBOX"'))
    tag = b._new_tag()
    b.send(tag + b" IDLE\r\n")
    assert b.readline().startswith(b"+")
    t0 = time.time()
    stack.deliver("alice", "INBOX", MSG.replace(b"hello", b"new for alice"))
    b.sock.settimeout(10)
    line = idle_line(b)
    assert b"4 EXISTS" in line, line
    # well below mailbox_idle_check_interval (30 s)
    assert time.time() - t0 < 5
    idle_done(b, tag)
    ok(b.select('"shared/alice/Projects"'))
    # a MOVE out of alice's folder: by value into bob's, expunged in hers
    ok(b.uid("MOVE", "2", "INBOX"))
    assert ma.fetch_meta("Projects") == []
    mine = bodies(mb, "INBOX")
    assert len(mine) == 5 and b"from bob" in mine[5]
    typ, data = a.select("Projects")
    assert typ == "OK" and data == [b"0"], data
    for c in (a, b):
        c.logout()
    ma.close()
    mb.close()


@pytest.mark.dovecot(public=True)
def test_public_namespace_is_the_public_users_mail(stack):
    sock = stack.p("mstored.sock")
    mp = msproto.Client(sock, user="public")
    mp.mbox_create("News")
    mp.append(MSG.replace(b"hello", b"news 1"), "News")
    # a folder the store has (made by its own client here) is found by
    # the first to open it, and takes an ACL
    stack.doveadm("acl set", "Public/News", "anyone", "lookup", "read",
                  "write", "write-seen", "insert", "expunge",
                  user="alice")
    a = stack.imap("alice")
    names = [x.decode() for x in ok(a.list('""', '"*"'))]
    assert any(x.endswith(" Public/News") for x in names), names
    typ, data = a.select('"Public/News"')
    assert typ == "OK" and data == [b"1"], data
    assert imap_bodies(a) == bodies(mp, "News")

    b = stack.imap("bob")
    ok(b.append('"Public/News"', None, None, MSG.replace(b"hello",
                                                         b"news 2")))
    assert sorted(bodies(mp, "News")) == [1, 2]
    # the users' own INBOXes got nothing
    for u in ("alice", "bob"):
        m = msproto.Client(sock, user=u)
        assert m.mbox_status("INBOX")["messages"] == 0
        m.close()
    ok(a.noop())
    assert a.response("EXISTS")[1][-1] == b"2"
    # \Seen is each user's own (INDEXPVT); \Flagged is the folder's
    ok(a.uid("STORE", "1", "+FLAGS", "(\\Seen \\Flagged)"))
    flags = {r["uid"]: r["flags"] for r in mp.fetch_meta("News")}
    assert flags[1] & FLAGGED and not flags[1] & SEEN
    for c in (a, b):
        c.logout()
    mp.close()


@pytest.mark.dovecot(public=True)
def test_public_namespace_needs_its_store_user(stack):
    # without plugin { mstore_public_user } the namespace cannot be
    # made, and says why
    r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                        "plugin/mstore_public_user=", "mailbox", "list",
                        "-u", "alice"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "needs plugin { mstore_public_user }" in r.stderr, r.stderr
