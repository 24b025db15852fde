"""The online tools, through mstored's admin socket: user add/del/list,
quota show/set (enforced at delivery), deliver, stats; and what they say
when mstored is not there."""

import os
import signal
import time

import msproto
from conftest import run_sh



def test_online_admin(mstore, tmp_path):
    var = tmp_path / "var"
    try:
        r = run_sh("start", var=var)
        assert r.returncode == 0, r.stdout + r.stderr
        conf = var / "mstore.conf"
        assert "user alice created" in mstore("-c", conf, "user", "add",
                                              "alice", check=0).stdout
        dup = mstore("-c", conf, "user", "add", "alice")
        assert dup.returncode == 1 and "exists" in dup.stderr
        bad = mstore("-c", conf, "user", "add", "bad\nname")
        assert bad.returncode == 2 and "bad user name" in bad.stderr
        users = mstore("-c", conf, "user", "list", check=0).stdout.split()
        assert "alice" in users and "demo" in users
        msg = tmp_path / "m.eml"
        msg.write_bytes(b"Subject: q\r\n\r\n" + b"x" * 1000 + b"\r\n")
        mstore("-c", conf, "quota", "alice", "2500", "0", check=0)
        q = mstore("-c", conf, "quota", "alice", check=0).stdout
        assert "of 2500 bytes" in q
        mstore("-c", conf, "deliver", "alice", "INBOX", msg, check=0)
        mstore("-c", conf, "deliver", "alice", "INBOX", msg, check=0)
        over = mstore("-c", conf, "deliver", "alice", "INBOX", msg)
        assert over.returncode == 1 and "quota" in over.stderr
        q = mstore("-c", conf, "quota", "alice", check=0).stdout
        assert "2032 of 2500 bytes, 2 of 0 messages" in q
        # the user's mailboxes (INBOX) against the store's max_mailboxes
        assert "1 of 10000 mailboxes" in q, q
        mstore("-c", conf, "mailbox", "add", "alice", "Archive", check=0)
        q = mstore("-c", conf, "quota", "alice", check=0).stdout
        assert "2 of 10000 mailboxes" in q, q
        nobox = mstore("-c", conf, "deliver", "alice", "Nope", msg)
        assert nobox.returncode == 1 and "no such mailbox" in nobox.stderr
        stats = dict(l.split() for l in
                     mstore("-c", conf, "stats", check=0).stdout.splitlines())
        assert stats["index.users"] == "2"
        # the files, read while mstored runs, tell the same story
        off = dict(l.split(" ", 1) for l in
                   mstore("-c", conf, "stats", "--offline",
                          check=0).stdout.splitlines())
        assert off["index.users"] == "2"
        assert off["log.records.place"] == "3"
        mstore("-c", conf, "user", "del", "alice", check=0)
        users = mstore("-c", conf, "user", "list", check=0).stdout.split()
        assert "alice" not in users
        gone = mstore("-c", conf, "quota", "alice")
        assert gone.returncode == 1 and "no such user" in gone.stderr
    finally:
        run_sh("stop", var=var)
    # with mstored stopped, the online tools say so and exit 2
    down = mstore("-c", conf, "stats")
    assert down.returncode == 2 and "mstored at" in down.stderr


def test_user_list_by_pages(mstore, tmp_path):
    """`mstore user list` over more users than one reply holds: the store's
    replies cut to 32 KiB (max_frame 64k, reloaded), 1,200 users of
    40-byte names (about 60 KB of list) come by pages, each once, in id
    order."""
    var = tmp_path / "var"
    try:
        r = run_sh("start", var=var)
        assert r.returncode == 0, r.stdout + r.stderr
        conf = var / "mstore.conf"
        text = conf.read_text().replace("[store]\n",
                                        "[store]\nmax_frame = 64k\n", 1)
        conf.write_text(text)
        os.kill(int((var / "mstored.pid").read_text()), signal.SIGHUP)
        time.sleep(0.3)
        admin = msproto.Client(var / "mstored-admin.sock")
        names = ["user-%04d-of-a-list-longer-than-a-reply" % i
                 for i in range(1200)]
        for n in names:
            admin.call(10, msproto._str(n))  # USER_CREATE
        # the whole list in one reply is refused now
        try:
            admin.call(12)  # USER_LIST, not paged
            assert False, "a whole list over the reply limit was answered"
        except msproto.Error as e:
            assert "by pages" in e.reason
        admin.close()
        out = mstore("-c", conf, "user", "list", check=0).stdout.split("\n")
        rows = [l.split(" ", 1) for l in out if l]
        ids = [int(i) for i, _ in rows]
        listed = [n for _, n in rows]
        assert ids == sorted(set(ids))
        assert sorted(listed) == sorted(names + ["demo"])
    finally:
        run_sh("stop", var=var)
