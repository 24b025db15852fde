"""Migration in with doveadm import (new UIDs in the store): a maildir
read by Dovecot's maildir driver is copied by value into mstore folders.
(doveadm backup -R, which keeps UIDs, is not supported yet.)"""
import os
import pwd

from dovecot_stack import MAIL_USER
from test_dovecot_imap import MSG, ok


def make_maildir(root, boxes):
    mu = pwd.getpwnam(MAIL_USER)
    for box, msgs in boxes.items():
        d = root if box == "INBOX" else os.path.join(root, "." + box)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        for i, (flags, data) in enumerate(msgs):
            name = f"{1700000000 + i}.M{i}P1.host:2,{flags}"
            with open(os.path.join(d, "cur", name), "wb") as f:
                f.write(data)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, mu.pw_uid, mu.pw_gid)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), mu.pw_uid, mu.pw_gid)


def test_doveadm_import_from_maildir(stack):
    md = stack.p("old-maildir")
    make_maildir(md, {"INBOX": [("S", MSG), ("", MSG.replace(b"hello",
                                                              b"second"))],
                      "Archive": [("FS", MSG)]})
    stack.doveadm("import", "-s", f"maildir:{md}", "migrated", "all",
                  user="alice")
    c = stack.imap()
    names = b" ".join(ok(c.list()))
    assert b"migrated/INBOX" in names and b"migrated/Archive" in names
    ok(c.select("migrated/INBOX"))
    data = ok(c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS "
                    "(SUBJECT)])"))
    text = b" ".join(d[0] + d[1] if isinstance(d, tuple) else d
                     for d in data)
    assert b"Subject: hello" in text and b"Subject: second" in text
    assert b"\\Seen" in text
    ok(c.select("migrated/Archive"))
    data = ok(c.uid("FETCH", "1:*", "(FLAGS)"))
    assert b"\\Flagged" in data[0] and b"\\Seen" in data[0]
    c.logout()
    # the store has them (a fresh index sees them)
    assert len(stack.store_view("alice", "migrated/INBOX")) == 2
