"""mstore export: a user's mail out of the store, offline and read-only,
as Maildir++ (flags, keywords through dovecot-keywords, UIDs through
dovecot-uidlist, received dates as mtimes, folder names in modified
UTF-7 with '.' escaped) or as one mboxrd file; the bytes come back
exactly.  A body damaged on both copies is listed by segment:offset and
the rest is exported, exit 1.  And `mstore status` (admin socket)."""
import base64
import os
import re
import signal

from conftest import prog, run
from test_http_api import Daemon


def mutf7(s):
    out, run_ = "", ""
    for ch in s + "\0":
        if ch != "\0" and not (0x20 <= ord(ch) < 0x7f):
            run_ += ch
            continue
        if run_:
            b = base64.b64encode(run_.encode("utf-16-be")).decode()
            out += "&" + b.rstrip("=").replace("/", ",") + "-"
            run_ = ""
        if ch == "\0":
            break
        out += {"&": "&-", ".": "\\2e", "\\": "\\5c"}.get(ch, ch)
    return out


def mstore(*args, check=None):
    return run(prog("mstore"), *args, check=check)


MSGS = {
    "m1": (b"Subject: one\r\nFrom: a@b\r\n\r\nFrom the top\r\n>From x\r\n"
           b"hello\r\n", "INBOX", ["--flags", "seen,flagged", "--keyword",
                                   "$Label1", "--keyword", "Important",
                                   "--received", "1700000000"]),
    "m2": (b"Subject: two\r\n\r\nno newline at the end", "INBOX",
           ["--received", "1700000100"]),
    "m3": (b"Subject: three\r\n\r\n" + b"x" * 70000 + b"\r\n", "Work/Sub.x",
           ["--flags", "answered,draft", "--received", "1700000200"]),
    "m4": (b"Subject: four\r\n\r\n\xc3\xa9t\xc3\xa9\r\n", "Ünïcode & co",
           ["--keyword", "Important"]),
}


def setup_store(tmp_path):
    d = Daemon(tmp_path, token=False)
    d.start()
    mstore("-c", d.conf, "user", "add", "alice", check=0)
    for box in ("Work", "Work/Sub.x", "Ünïcode & co"):
        mstore("-c", d.conf, "mailbox", "add", "alice", box, check=0)
    for name, (data, box, opts) in MSGS.items():
        f = tmp_path / name
        f.write_bytes(data)
        mstore("-c", d.conf, "deliver", "alice", box, f, *opts, check=0)
    return d


def files(d):
    return sorted((d / "cur").iterdir()) if (d / "cur").exists() else []


def test_export_maildir_and_mbox(tmp_path):
    d = setup_store(tmp_path)
    out = mstore("-c", d.conf, "status", check=0).stdout
    assert re.search(r"copy primary\s+ok\s+\S*store/primary", out), out
    assert re.search(r"users\s+1\n", out) and re.search(r"messages\s+4 ", out)
    assert "both copies take writes" in out
    d.stop()

    md = tmp_path / "md"
    p = mstore("-c", d.conf, "export", "alice", "--maildir", md, check=0)
    assert "exported 4 messages" in p.stdout
    inbox = files(md)
    assert len(inbox) == 2
    assert inbox[0].name.endswith(":2,FSab")   # seen, flagged, 2 keywords
    assert inbox[1].name.endswith(":2,")
    assert inbox[0].read_bytes() == MSGS["m1"][0]
    assert inbox[1].read_bytes() == MSGS["m2"][0]
    assert int(inbox[0].stat().st_mtime) == 1700000000
    assert re.match(r"1700000000\.M1P\d+V\d+\.mstore,S=%d,W=\d+:2,FSab$"
                    % len(MSGS["m1"][0]), inbox[0].name)
    assert (md / "dovecot-keywords").read_text() == "0 $Label1\n1 Important\n"
    uidlist = (md / "dovecot-uidlist").read_text().splitlines()
    assert re.match(r"3 V\d+ N3$", uidlist[0])
    assert [l.split()[0] for l in uidlist[1:]] == ["1", "2"]
    assert uidlist[1].split(":", 1)[1] == inbox[0].name.split(":2,")[0]

    sub = md / ".Work.Sub\\2ex"
    assert (sub / "maildirfolder").exists()
    [m3] = files(sub)
    assert m3.name.endswith(":2,DR") and m3.read_bytes() == MSGS["m3"][0]
    assert files(md / ".Work") == []
    uni = md / ("." + mutf7("Ünïcode & co"))
    [m4] = files(uni)
    assert m4.name.endswith(":2,a") and m4.read_bytes() == MSGS["m4"][0]
    assert (uni / "dovecot-keywords").read_text() == "0 Important\n"

    # the output must not exist (or be empty)
    again = mstore("-c", d.conf, "export", "alice", "--maildir", md)
    assert again.returncode == 2

    mb = tmp_path / "inbox.mbox"
    mstore("-c", d.conf, "export", "alice", "--mbox", mb, check=0)
    text = mb.read_bytes()
    parts = re.split(rb"(?m)^From MAILER-DAEMON [A-Z][a-z]{2} [A-Z][a-z]{2} "
                     rb"[ \d]\d \d\d:\d\d:\d\d \d{4}\n", text)
    assert parts[0] == b"" and len(parts) == 3
    assert text.startswith(b"From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n")
    got = []
    for part in parts[1:]:
        assert part.endswith(b"\n\n")
        body = re.sub(rb"(?m)^>(>*From )", rb"\1", part[:-1])
        got.append(body)
    assert b">From the top" in parts[1] and b">>From x" in parts[1]
    assert got[0] == MSGS["m1"][0]
    assert got[1] == MSGS["m2"][0] + b"\n"   # a LF was added
    mb2 = tmp_path / "work.mbox"
    mstore("-c", d.conf, "export", "alice", "--mbox", mb2, "--mailbox",
           "Work/Sub.x", check=0)
    assert MSGS["m3"][0] in mb2.read_bytes()
    assert mstore("-c", d.conf, "export", "nobody", "--mbox",
                  tmp_path / "x.mbox").returncode == 2


def flip(path, off, mask=0x20):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)[0]
        f.seek(off)
        f.write(bytes([b ^ mask]))


def test_export_damaged_body(tmp_path):
    d = setup_store(tmp_path)
    d.stop(signal.SIGTERM)
    store = tmp_path / "store"
    dump = mstore("dump", store / "primary", "--secondary",
                  store / "secondary", check=0).stdout
    bodies = re.findall(r"^(\d+):(\d+) seq=\d+ .*type=body len=(\d+)", dump,
                        re.M)
    assert len(bodies) == 4
    seg, off, _ = bodies[2]    # m3's body, in Work/Sub.x
    seg, off = int(seg), int(off)
    for copy in ("primary", "secondary"):
        flip(store / copy / "log" / f"{seg:012d}.seg", off + 32 + 50)
    md = tmp_path / "md"
    p = mstore("-c", d.conf, "export", "alice", "--maildir", md)
    assert p.returncode == 1, p.stdout + p.stderr
    assert re.search(rf"^unreadable {seg}:{off} mailbox Work/Sub\.x uid 1: ",
                     p.stderr, re.M), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert "exported 3 messages" in p.stdout and "1 unreadable" in p.stdout
    assert [f.read_bytes() for f in files(md)] == [MSGS["m1"][0],
                                                  MSGS["m2"][0]]
    assert files(md / ".Work.Sub\\2ex") == []
    [m4] = files(md / ("." + mutf7("Ünïcode & co")))
    assert m4.read_bytes() == MSGS["m4"][0]
    # the store was only read: verify still sees the same damage, no more
    v = mstore("verify", store / "primary", "--secondary",
               store / "secondary", "--no-index")
    assert v.returncode == 1
