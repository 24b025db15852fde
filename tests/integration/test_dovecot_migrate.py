"""Migration into the store, and out of it.

- doveadm import: a maildir read by Dovecot's maildir driver is copied
  by value into mstore folders (new UIDs in the store).
- doveadm backup -R: a generated maildir of 1,000 messages in 10 folders
  (flags, keywords, a dovecot-uidlist with UIDs that have gaps, its own
  UIDVALIDITY and mailbox GUID per folder) becomes the user's store:
  the same bytes, flags, keywords, UIDs, UIDNEXT and UIDVALIDITY over
  IMAP and in the store itself (mstore export reads the store, not
  Dovecot), also after Dovecot's index directory is deleted; a second
  backup writes nothing to the store.
- the same from an mdbox that Dovecot made (dsync from such a maildir):
  backup -R keeps UIDs, UIDVALIDITY, UIDNEXT, flags and keywords, and
  import copies.
- out of the store: doveadm backup into an mdbox, then a two-way
  doveadm sync after changes on both sides."""
import os
import pwd
import random
import re
import shutil
import subprocess
import time

import msproto
from dovecot_stack import MAIL_USER
from test_dovecot_imap import MSG, ok


def chown_tree(root):
    mu = pwd.getpwnam(MAIL_USER)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, mu.pw_uid, mu.pw_gid)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), mu.pw_uid, mu.pw_gid)


def make_maildir(root, boxes):
    for box, msgs in boxes.items():
        d = root if box == "INBOX" else os.path.join(root, "." + box)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        for i, (flags, data) in enumerate(msgs):
            name = f"{1700000000 + i}.M{i}P1.host:2,{flags}"
            with open(os.path.join(d, "cur", name), "wb") as f:
                f.write(data)
    chown_tree(root)


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


# ---- doveadm backup -R ----

FOLDERS = ["INBOX", "Archive", "Sent", "Drafts", "Trash", "Junk", "Work",
           "Lists/dev", "Lists/announce", "Family"]
KEYWORDS = ["$Forwarded", "$Important", "NonJunk", "project-x"]
# maildir filename letters of the system flags
FLAG_LETTER = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R",
               "\\Seen": "S", "\\Deleted": "T"}
PER_FOLDER = 100


def gen_message(rng, box, i):
    lines = [f"From: Sender {i} <s{i}@example.test>",
             "To: alice@example.test",
             f"Subject: {box} #{i}",
             f"Message-ID: <{abs(hash(box)) % 10**6}.{i}@gen.example.test>",
             "Date: Tue, 14 Nov 2023 22:13:20 +0000",
             "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8",
             ""]
    for _ in range(rng.randint(1, 40)):
        lines.append("".join(rng.choice("abcdefghij klmnop") for _ in
                             range(rng.randint(0, 70))))
    data = "\r\n".join(lines).encode() + b"\r\n"
    if i % 10 == 3:
        data += "\u00e9t\u00e9 \u2603\r\n".encode()  # 8-bit body
    if i % 25 == 7:
        data = data.rstrip(b"\r\n")  # no line end at the end
    return data


def gen_backup_maildir(root, seed=20231114, per_folder=PER_FOLDER):
    """The maildir and what it holds: folder -> {uidvalidity, next_uid,
    guid, msgs: uid -> (flags, keywords, bytes)}."""
    rng = random.Random(seed)
    truth = {}
    for fi, box in enumerate(FOLDERS):
        d = root if box == "INBOX" else \
            os.path.join(root, "." + box.replace("/", "."))
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        uidvalidity = 1400000000 + fi * 7919 + 13
        guid = "%032x" % rng.getrandbits(128)
        uid = rng.randint(0, 50)
        msgs, lines = {}, []
        for i in range(per_folder):
            uid += rng.choice([1, 1, 1, 2, 3, 17, 250])  # gaps
            flags = {f for f in FLAG_LETTER if rng.random() < 0.3}
            kws = {k for k in KEYWORDS if rng.random() < 0.2}
            data = gen_message(rng, box, i)
            base = f"{1600000000 + fi * 1000 + i}.M{i}P{fi}.gen"
            letters = sorted(FLAG_LETTER[f] for f in flags) + \
                sorted(chr(ord("a") + KEYWORDS.index(k)) for k in kws)
            path = os.path.join(d, "cur", base + ":2," + "".join(letters))
            with open(path, "wb") as f:
                f.write(data)
            received = 1600000000 + fi * 1000 + i
            os.utime(path, (received, received))
            msgs[uid] = (sorted(flags), sorted(kws), data)
            lines.append(f"{uid} :{base}")
        next_uid = uid + 10
        with open(os.path.join(d, "dovecot-uidlist"), "w") as f:
            f.write(f"3 V{uidvalidity} N{next_uid} G{guid}\n" +
                    "\n".join(lines) + "\n")
        with open(os.path.join(d, "dovecot-keywords"), "w") as f:
            f.write("".join(f"{n} {k}\n" for n, k in enumerate(KEYWORDS)))
        truth[box] = {"uidvalidity": uidvalidity, "next_uid": next_uid,
                      "guid": guid, "msgs": msgs}
    chown_tree(root)
    return truth


def backup(stack, md, location=None):
    """doveadm backup -R -u alice maildir:MD (or LOCATION; the quota rule
    of the test config is lifted: it allows 1000 messages, the migration
    brings exactly that many)."""
    r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                        "plugin/quota_rule=*:storage=1G:messages=100000",
                        "backup", "-R", "-u", "alice",
                        location or f"maildir:{md}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    # doveadm's own errors and index repairs are not in Dovecot's log
    assert "Error" not in r.stderr and "fscking" not in r.stderr, r.stderr


def imap_state(c, box):
    """UIDVALIDITY, UIDNEXT and uid -> (flags, keywords, bytes)."""
    typ, data = c.select(f'"{box}"', readonly=True)
    assert typ == "OK", (box, data)
    uidv = int(c.untagged_responses["UIDVALIDITY"][-1])
    uidnext = int(c.untagged_responses["UIDNEXT"][-1])
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    assert typ == "OK", data
    msgs = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        uid = int(re.search(rb"UID (\d+)", head).group(1))
        fl = re.search(rb"FLAGS \(([^)]*)\)", head)
        if fl is None:
            continue
        words = [w.decode() for w in fl.group(1).split()
                 if w != b"\\Recent"]
        flags = sorted(w for w in words if w.startswith("\\"))
        kws = sorted(w for w in words if not w.startswith("\\"))
        msgs[uid] = (flags, kws, body)
    return uidv, uidnext, msgs


def store_state(stack, user):
    """The store's own view, read by mstore export (not through
    Dovecot): folder -> (UIDVALIDITY, uid -> (flags, keywords, bytes))."""
    out = stack.p("export-%d" % time.monotonic_ns())
    stack.mstore("export", user, "--maildir", out)
    letter_flag = {v: k for k, v in FLAG_LETTER.items()}
    res = {}
    dirs = [(out, "INBOX")] + [
        (os.path.join(out, e), e[1:].replace(".", "/"))
        for e in sorted(os.listdir(out)) if e.startswith(".")]
    for d, name in dirs:
        kwnames = {}
        kwf = os.path.join(d, "dovecot-keywords")
        if os.path.exists(kwf):
            for line in open(kwf):
                n, k = line.rstrip("\n").split(" ", 1)
                kwnames[chr(ord("a") + int(n))] = k
        with open(os.path.join(d, "dovecot-uidlist")) as f:
            header = f.readline().split()
            uidv = int(header[1][1:])
            base_uid = {}
            for line in f:
                uid, base = line.rstrip("\n").split(" :", 1)
                base_uid[base] = int(uid)
        msgs = {}
        for fn in os.listdir(os.path.join(d, "cur")):
            base, info = fn.split(":2,", 1)
            flags = sorted(letter_flag[ch] for ch in info if ch.isupper())
            kws = sorted(kwnames[ch] for ch in info if ch.islower())
            with open(os.path.join(d, "cur", fn), "rb") as f:
                msgs[base_uid[base]] = (flags, kws, f.read())
        res[name] = (uidv, msgs)
    shutil.rmtree(out)
    return res


def durable_seq(stack):
    out = stack.mstore("stats").stdout.decode()
    return int(re.search(r"^log\.durable_seq (\d+)$", out, re.M).group(1))


def check_imap(stack, truth):
    c = stack.imap()
    for box, t in truth.items():
        uidv, uidnext, msgs = imap_state(c, box)
        assert uidv == t["uidvalidity"], box
        assert uidnext == t["next_uid"], box
        assert sorted(msgs) == sorted(t["msgs"]), box
        for uid, want in t["msgs"].items():
            assert msgs[uid] == want, (box, uid)
    c.logout()


def test_doveadm_backup_keeps_uids(stack):
    md = stack.p("Maildir")
    truth = gen_backup_maildir(md)
    t0 = time.monotonic()
    backup(stack, md)
    took = time.monotonic() - t0
    print(f"doveadm backup -R of {len(FOLDERS) * PER_FOLDER} messages: "
          f"{took:.1f} s")

    check_imap(stack, truth)
    # the store itself, read without Dovecot
    st = store_state(stack, "alice")
    for box, t in truth.items():
        uidv, msgs = st[box]
        assert uidv == t["uidvalidity"], box
        assert msgs == t["msgs"], box
    # the mailbox GUIDs are the maildir's (dsync matches folders by them)
    out = stack.doveadm("mailbox status", "guid", "*", user="alice").stdout
    guids = dict(re.findall(r"^(.+?) guid=([0-9a-f]{32})$", out, re.M))
    for box, t in truth.items():
        assert guids[box] == t["guid"], box

    # a second backup finds nothing to do: nothing is written
    seq = durable_seq(stack)
    backup(stack, md)
    assert durable_seq(stack) == seq

    # the store's records survive a restart, a rebuild of its index from
    # the log, and verify; dump names them
    stack.kill_mstored()
    stack.mstore("verify")
    dump = stack.mstore("dump").stdout.decode()
    assert dump.count("type=mbox-update") >= len(FOLDERS)
    stack.mstore("reindex")
    stack.mstore("verify")
    stack.start_mstored()
    st = store_state(stack, "alice")
    for box, t in truth.items():
        assert st[box] == (t["uidvalidity"], t["msgs"]), box
    check_imap(stack, truth)

    # Dovecot's index is only a cache: without it, all is the same
    shutil.rmtree(stack.index_dir("alice"))
    check_imap(stack, truth)
    out = stack.doveadm("mailbox status", "guid", "*", user="alice").stdout
    assert dict(re.findall(r"^(.+?) guid=([0-9a-f]{32})$", out,
                           re.M)) == guids
    seq = durable_seq(stack)
    backup(stack, md)
    assert durable_seq(stack) == seq


def test_store_migration_rules(stack):
    """The store's rules, straight on its protocol: a new UIDVALIDITY
    only while the mailbox is empty, UIDNEXT and the modseq only raised,
    an APPEND_UID below UIDNEXT refused with a reason that says so, the
    GUID kept and read back by an MBOX_UPDATE that changes nothing."""
    c = msproto.Client(stack.p("mstored.sock"), user="bob")
    guid = bytes(range(1, 17))
    st = c.mbox_update("INBOX", uidvalidity=1234567, uidnext=100,
                       highestmodseq=500, guid=guid)
    assert (st["uidvalidity"], st["uidnext"], st["highestmodseq"],
            st["guid"]) == (1234567, 100, 500, guid)
    # nothing to change: a read, nothing written
    seq = durable_seq(stack)
    assert c.mbox_update("INBOX", uidnext=50) == st
    assert durable_seq(stack) == seq
    try:
        c.append_uid(b"Subject: x\r\n\r\nx\r\n", "INBOX", 99)
        raise AssertionError("uid 99 below UIDNEXT 100 was taken")
    except msproto.Error as e:
        assert e.status == msproto.ESTATE
        assert "99" in e.reason and "100" in e.reason, e.reason
    mguid = bytes(range(100, 116))
    assert c.append_uid(b"Subject: y\r\n\r\ny\r\n", "INBOX", 150,
                        mguid) == 150
    assert c.append_uid(b"Subject: z\r\n\r\nz\r\n", "INBOX", 0) == 151
    meta = c.fetch_meta("INBOX")
    assert [m["uid"] for m in meta] == [150, 151]
    assert meta[0]["guid"] == mguid
    s2 = c.mbox_status("INBOX")
    assert s2["uidnext"] == 152 and s2["highestmodseq"] > 500
    try:
        c.mbox_update("INBOX", uidvalidity=7654321)
        raise AssertionError("UIDVALIDITY changed with messages in")
    except msproto.Error as e:
        assert e.status == msproto.ESTATE and "empty" in e.reason
    # empty again: a new UIDVALIDITY is taken, UIDNEXT stays
    c.expunge("INBOX", [(1, 0xffffffff)])
    st = c.mbox_update("INBOX", uidvalidity=7654321)
    assert (st["uidvalidity"], st["uidnext"]) == (7654321, 152)
    c.close()
    stack.kill_mstored()
    stack.mstore("reindex")
    stack.start_mstored()
    c = msproto.Client(stack.p("mstored.sock"), user="bob")
    st = c.mbox_update("INBOX")
    assert (st["uidvalidity"], st["uidnext"], st["guid"]) == \
        (7654321, 152, guid)
    c.close()


def doveadm_plain(stack, location, *args):
    """doveadm for alice with her mail at LOCATION, without the mstore
    plugin (a server that has not been moved yet)."""
    r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                        f"mail_location={location}", "-o", "mail_plugins=",
                        *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


def test_doveadm_backup_from_mdbox(stack):
    """Mail kept in Dovecot's mdbox comes in the same way: an mdbox made
    by Dovecot (dsync from a generated maildir, so with the maildir's
    UIDs, UIDVALIDITY, flags and keywords), then `doveadm backup -R -u
    alice mdbox:...` into the store: the same UIDs, UIDNEXT,
    UIDVALIDITY, flags, keywords and bytes over IMAP and in the store;
    `doveadm import` from it copies with new UIDs."""
    md = stack.p("Maildir")
    truth = gen_backup_maildir(md, seed=7, per_folder=30)
    mdbox = stack.p("mdbox")
    os.makedirs(mdbox)
    chown_tree(mdbox)
    # the mdbox, made by Dovecot from the maildir
    doveadm_plain(stack, f"maildir:{md}", "backup", "-u", "alice",
                  f"mdbox:{mdbox}")
    assert os.path.isdir(os.path.join(mdbox, "storage"))
    out = doveadm_plain(stack, f"mdbox:{mdbox}", "mailbox", "status", "-u",
                        "alice", "uidvalidity uidnext messages", "*")
    got = {}
    for line in out.splitlines():
        box, _, rest = line.rpartition(" messages=")
        kv = dict(f.split("=") for f in ("messages=" + rest).split())
        got[box] = (int(kv["uidvalidity"]), int(kv["uidnext"]),
                    int(kv["messages"]))
    for box, t in truth.items():
        assert got.get(box) == (t["uidvalidity"], t["next_uid"],
                                len(t["msgs"])), (box, got, out)

    backup(stack, None, f"mdbox:{mdbox}")
    check_imap(stack, truth)
    # the store holds the bytes dsync read from the mdbox, which Dovecot
    # wrote with LF line ends (mail_save_crlf = no); IMAP serves them
    # with CRLF, as above
    st = store_state(stack, "alice")
    for box, t in truth.items():
        lf = {uid: (f, k, b.replace(b"\r\n", b"\n"))
              for uid, (f, k, b) in t["msgs"].items()}
        assert st[box] == (t["uidvalidity"], lf), box
    # again: nothing to do, nothing written
    seq = durable_seq(stack)
    backup(stack, None, f"mdbox:{mdbox}")
    assert durable_seq(stack) == seq

    # POP3: LIST's sizes are the CRLF bytes RETR sends (a message without
    # a last line end gets one on the wire, not in its size); RETR sets
    # \Seen, so it comes after the check above
    p = stack.pop3()
    _, listing, _ = p.list()
    sizes = [int(ln.split()[1]) for ln in listing]
    want = [truth["INBOX"]["msgs"][u][2] for u in
            sorted(truth["INBOX"]["msgs"])]
    assert sizes == [len(m) for m in want]
    for n, m in enumerate(want, 1):
        _, lines, _ = p.retr(n)
        data = b"".join(ln + b"\r\n" for ln in lines)
        assert data == (m if m.endswith(b"\r\n") else m + b"\r\n"), n
    p.quit()
    # doveadm import copies from the mdbox, by value, new UIDs
    stack.doveadm("import", "-s", f"mdbox:{mdbox}", "old", "mailbox",
                  "Work", user="alice")
    c = stack.imap()
    ok(c.select("old/Work", readonly=True))
    data = ok(c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])"))
    bodies = sorted(d[1] for d in data if isinstance(d, tuple))
    assert bodies == sorted(m[2] for m in truth["Work"]["msgs"].values())
    c.logout()


# ---- out of the store, and both ways ----

def dsync_view(stack, location, box):
    """uid -> (flags and keywords without \\Recent, GUID, CRLF size) of
    BOX, by doveadm: through the plugin (location None) or plain Dovecot
    (mdbox keeps LF line ends: its physical sizes differ)."""
    args = ["-f", "flow", "fetch", "-u", "alice",
            "uid guid size.virtual flags", "mailbox", box, "all"]
    if location is None:
        r = subprocess.run(["doveadm", "-c", stack.dconf] + args,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr)
        out = r.stdout
    else:
        out = doveadm_plain(stack, location, *args)
    view = {}
    for line in out.splitlines():
        m = re.match(r"uid=(\d+) guid=(\S+) size.virtual=(\d+) "
                     r"flags=(.*)$", line)
        assert m, line
        view[int(m.group(1))] = (
            sorted(f for f in m.group(4).split() if f != "\\Recent"),
            m.group(2), int(m.group(3)))
    return view


def box_status(stack, location, box):
    args = ["mailbox", "status", "-u", "alice", "uidvalidity uidnext",
            box]
    if location is None:
        return stack.doveadm(args[0] + " " + args[1], *args[4:],
                             user="alice").stdout.split()
    return doveadm_plain(stack, location, *args).split()


def test_doveadm_backup_out_and_two_way_sync(stack):
    """Leaving the store is as easy as coming in: `doveadm backup -u
    alice mdbox:...` copies the store's folders out with their UIDs,
    UIDVALIDITY, GUIDs, sizes, flags and keywords; then, with changes
    on both sides (a flag, a keyword, an expunge, a new message), a
    two-way `doveadm sync` leaves both the same, and the store (a fresh
    index) agrees."""
    md = stack.p("Maildir")
    truth = gen_backup_maildir(md, seed=11, per_folder=20)
    backup(stack, md)
    mdbox = stack.p("out")
    os.makedirs(mdbox)
    chown_tree(mdbox)
    stack.doveadm("backup", f"mdbox:{mdbox}", user="alice")
    loc = f"mdbox:{mdbox}"
    for box in truth:
        assert box_status(stack, loc, box) == box_status(stack, None, box)
        assert dsync_view(stack, loc, box) == dsync_view(stack, None, box)
        assert sorted(dsync_view(stack, loc, box)) == \
            sorted(truth[box]["msgs"]), box

    inbox = sorted(truth["INBOX"]["msgs"])
    # changes on the mdbox side ...
    doveadm_plain(stack, loc, "flags", "add", "-u", "alice", "\\Answered",
                  "mailbox", "INBOX", "uid", str(inbox[0]))
    r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                        f"mail_location={loc}", "-o", "mail_plugins=",
                        "save", "-u", "alice", "-m", "Work"],
                       input=MSG, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # ... and on the store's
    c = stack.imap()
    ok(c.select("INBOX"))
    ok(c.uid("STORE", str(inbox[1]), "+FLAGS", "(\\Deleted)"))
    ok(c.expunge())
    ok(c.uid("STORE", str(inbox[2]), "+FLAGS", "(project-y)"))
    c.logout()
    stack.doveadm("sync", loc, user="alice")
    for box in truth:
        assert dsync_view(stack, loc, box) == dsync_view(stack, None, box)
    view = dsync_view(stack, None, "INBOX")
    assert "\\Answered" in view[inbox[0]][0]
    assert inbox[1] not in view
    assert "project-y" in view[inbox[2]][0]
    work = dsync_view(stack, None, "Work")
    assert len(work) == len(truth["Work"]["msgs"]) + 1
    # the store itself, read through a new index
    for box in ("INBOX", "Work"):
        assert stack.store_view("alice", box) == {
            u: v[0] for u, v in dsync_view(stack, None, box).items()}


def test_two_way_sync_uid_conflict(stack):
    """A two-way `doveadm sync` where both sides got a new message under
    the same UID since the last sync (a delivery to the store, one to the
    old server) renumbers both: dsync copies the store's message to a new
    UID of its choosing and saves the other side's under the next.  The
    store's COPY gives the next UID itself, so such a copy is saved by
    value with the UID dsync asks for; before, the save that followed
    failed ("uid 5 is below the mailbox's UIDNEXT 6") and the sides kept
    disagreeing.  dsync also saves such messages in the order they reach
    it, not by UID (the index sorts a transaction's appends at commit):
    the plugin holds them until commit and sends them in UID order; sent
    as they came, "uid 5 is below the mailbox's UIDNEXT 7" half the time.
    When dsync saves the two out of UID order it also moves them to new
    UIDs within the folder in one transaction whose expunges the index
    takes as done: the plugin sends those to the store first (before,
    the store kept both old copies while the index dropped them).  Which
    way a folder goes is dsync's timing, so four folders are synced at
    once.  Both sides end up the same (after dsync's own "run again" when
    it says so), each new message once in the store, and syncing
    settles: a sync then writes nothing to the store."""
    mdbox = stack.p("peer")
    os.makedirs(mdbox)
    chown_tree(mdbox)
    loc = f"mdbox:{mdbox}"
    boxes = ["INBOX", "A", "B", "C"]
    for box in boxes[1:]:
        stack.doveadm("mailbox create", box, user="alice")
    for box in boxes:
        for i in range(3):
            stack.deliver("alice", box, MSG.replace(b"hello", b"s%d" % i))
    stack.doveadm("sync", loc, user="alice")
    for box in boxes:
        assert dsync_view(stack, loc, box) == dsync_view(stack, None, box)
    # UID 4 on both sides, different messages; and a flag on the store's
    # side, so that no folder's UIDNEXT and HIGHESTMODSEQ happen to be the
    # same on both sides (dsync then skips it as unchanged)
    c = stack.imap()
    for box in boxes:
        stack.deliver("alice", box, MSG.replace(b"hello", b"store4"))
        ok(c.select(box))
        ok(c.uid("STORE", "1", "+FLAGS", r"(\Flagged)"))
    c.logout()
    for box in boxes:
        r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                            f"mail_location={loc}", "-o", "mail_plugins=",
                            "save", "-u", "alice", "-m", box],
                           input=MSG.replace(b"hello", b"peer4"),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    r = stack.doveadm("sync", loc, user="alice", check=False)
    if r.returncode == 2:
        # dsync's own "UIDs changed due to UID conflicts: run again"
        assert "UID conflicts" in r.stderr, r.stderr
        r = stack.doveadm("sync", loc, user="alice", check=False)
    assert r.returncode == 0, (r.stdout, r.stderr)
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    views = {}
    for box in boxes:
        store, peer = dsync_view(stack, None, box), dsync_view(stack, loc,
                                                              box)
        assert store == peer, (box, store, peer)
        assert len(store) == 5 and 4 not in store, (box, store)
        assert box_status(stack, loc, box) == box_status(stack, None, box)
        # both new messages, once each, in the store itself
        subjects = sorted(re.search(rb"Subject: (\S+)",
                                    m.fetch_body(box, r["uid"])).group(1)
                          for r in m.fetch_meta(box))
        assert subjects == [b"peer4", b"s0", b"s1", b"s2", b"store4"], \
            (box, subjects)
        views[box] = store
    m.close()
    # after a "run again", dsync's next sync may still raise both sides'
    # HIGHESTMODSEQ to the same value (one write); the one after that
    # writes nothing
    stack.doveadm("sync", loc, user="alice")
    seq = durable_seq(stack)
    stack.doveadm("sync", loc, user="alice")
    assert durable_seq(stack) == seq
    for box in boxes:
        assert dsync_view(stack, None, box) == views[box]


def test_backup_replaces_inbox_cleanly(stack):
    """doveadm backup -R deletes the store's INBOX (another UIDVALIDITY
    and GUID) and makes it again under the same path, with its index
    still in Dovecot's cache of open indexes.  The index object kept its
    note that MODSEQs were on while the files made again had no MODSEQ
    extension: dsync's MODSEQ update at the end was "Log synchronization
    error ... modseqs updated before they were enabled" and an fsck of
    the index, for INBOX and for the second folder of an mdbox source
    made by doveadm.  The backup is now clean, and keeps the source's
    UIDs."""
    mdbox = stack.p("src")
    os.makedirs(mdbox)
    chown_tree(mdbox)
    loc = f"mdbox:{mdbox}"
    doveadm_plain(stack, loc, "mailbox", "create", "-u", "alice", "Work")
    for box, n in (("INBOX", 3), ("Work", 2)):
        for i in range(n):
            r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                                f"mail_location={loc}", "-o",
                                "mail_plugins=", "save", "-u", "alice",
                                "-m", box],
                               input=MSG.replace(b"hello", b"%s%d" % (
                                   box.encode(), i)),
                               capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr
    backup(stack, None, loc)
    for box in ("INBOX", "Work"):
        assert dsync_view(stack, None, box) == dsync_view(stack, loc, box)
        assert box_status(stack, None, box) == box_status(stack, loc, box)
    # IMAP reads it, CONDSTORE too
    c = stack.imap()
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"3"], data
    line = ok(c.status("INBOX", "(HIGHESTMODSEQ)"))[0]
    assert int(re.search(rb"HIGHESTMODSEQ (\d+)", line).group(1)) > 0
    c.logout()


def test_backup_holds_bounded_bodies(stack):
    """The saves dsync gives UIDs are held until commit (to be sent in
    UID order), a copy of each body with them; once the held bodies pass
    16 MiB they are sent.  doveadm backup -R of ten 12 MB messages (one
    dsync commit: it commits every 100) keeps the UIDs and sizes, and
    doveadm's largest resident size stays under 100 MB: with no bound
    it held all ten, 146 MB against 64 MB when measured."""
    md = stack.p("Maildir")
    os.makedirs(md)
    chown_tree(md)
    loc = f"maildir:{md}"
    big = MSG.replace(b"Hello, world.\r\n", (b"x" * 998 + b"\r\n") * 12000)
    for i in range(10):
        r = subprocess.run(["doveadm", "-c", stack.dconf, "-o",
                            f"mail_location={loc}", "-o", "mail_plugins=",
                            "save", "-u", "alice"],
                           input=big.replace(b"hello", b"m%d" % i),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    # doveadm's peak resident size, apart from this process's other
    # children: a child that runs it and reports its own children's
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, "
             "text=True)\n"
             "sys.stderr.write(r.stderr)\n"
             "print(r.returncode, resource.getrusage("
             "resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    r = subprocess.run(["/usr/bin/python3", "-c", probe, "doveadm", "-c",
                        stack.dconf, "-o",
                        "plugin/quota_rule=*:storage=1G:messages=100000",
                        "backup", "-R", "-u", "alice", loc],
                       capture_output=True, text=True, timeout=300)
    rc, maxrss_kb = map(int, r.stdout.split())
    assert rc == 0 and "Error" not in r.stderr, r.stderr
    assert maxrss_kb < 100 * 1024, maxrss_kb
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    meta = m.fetch_meta("INBOX")
    assert [x["uid"] for x in meta] == list(range(1, 11))
    # the maildir keeps LF line ends, and so the store what dsync read
    assert {x["size"] for x in meta} == {
        len(big.replace(b"hello", b"m0").replace(b"\r\n", b"\n"))}
    for x in meta[:2]:
        assert m.fetch_body("INBOX", x["uid"]).replace(b"\r\n", b"\n") == \
            big.replace(b"hello", b"m%d" % (x["uid"] - 1)).replace(
                b"\r\n", b"\n")
    m.close()
