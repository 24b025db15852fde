"""The same IMAP session against Dovecot on mstore and Dovecot on mdbox
(one Dovecot; user "alice" on the store, user "mdbox" on mdbox through a
userdb mail= override), reply by reply: every untagged line and every
tagged reply must be the same, once the parts that differ by nature are
masked (timings, UIDVALIDITY, MODSEQ values, tags).  What the other
tests check item by item, this checks for everything a client sees at
once, \\Recent included, against Dovecot's own format."""
import imaplib
import poplib
import re

import pytest

from test_dovecot_imap import MSG, MIME, raw

DATE = '"07-Feb-1994 21:52:25 -0800"'


def lit(data):
    return "{%d+}\r\n%s" % (len(data), data.decode())


# One session's commands, in order; "@2 ..." runs in a second session of
# the same user (opened when first needed), which sees what the first
# did; "!lmtp MESSAGE" delivers MESSAGE through Dovecot's LMTP
SESSION = [
    'CAPABILITY', 'NAMESPACE',
    'CREATE Work', 'CREATE "Work/Sub"', 'CREATE Sent',
    'CREATE "&AMk-t&AOk-"', 'CREATE "a/b/"',
    'LIST "" "*"', 'LIST "" "%"', 'LIST "" "Work/%"', 'LSUB "" "*"',
    'SUBSCRIBE Work', 'LSUB "" "*"',
    'LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN)',
    'LIST (SPECIAL-USE) "" "*"',
    'LIST "" "*" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN RECENT))',
    'APPEND INBOX (\\Seen) %s %s' % (DATE, lit(MSG)),
    'APPEND INBOX (\\Flagged $Label1) %s %s' % (DATE, lit(MIME)),
    'APPEND INBOX () %s {5+}\r\nab\ncd' % DATE,
    'APPEND Work %s %s' % (DATE, lit(MSG)),
    'STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN SIZE)',
    'STATUS Work (MESSAGES RECENT UNSEEN)',
    'GETQUOTAROOT INBOX',
    'SELECT INBOX (CONDSTORE)',
    '@2 SELECT INBOX',
    'FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)',
    'FETCH 1:* (BODYSTRUCTURE)', 'FETCH 1:* (BODY)',
    'FETCH 2 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BINARY.PEEK[2] '
    'BINARY.SIZE[2] BODY.PEEK[HEADER] BODY.PEEK[TEXT]<2.5>)',
    'FETCH 3 (BODY.PEEK[] RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[TEXT])',
    'FETCH 1 (RFC822.HEADER RFC822.TEXT)',
    'UID FETCH 1:* (UID FLAGS)',
    'SEARCH ALL', 'SEARCH UNSEEN', 'SEARCH RECENT', 'SEARCH NEW',
    'SEARCH FLAGGED', 'SEARCH KEYWORD $Label1', 'SEARCH SUBJECT hello',
    'SEARCH BODY world', 'SEARCH LARGER 100', 'SEARCH SMALLER 10',
    'SEARCH BEFORE 1-Jan-2000', 'SEARCH SENTBEFORE 1-Jan-2000',
    'SEARCH HEADER Message-ID 1@example', 'SEARCH OR SEEN FLAGGED',
    'SEARCH NOT SEEN', 'SEARCH 2:*', 'SEARCH UID 2:3',
    'SEARCH RETURN (MIN MAX COUNT ALL) ALL',
    'SORT (SUBJECT) UTF-8 ALL', 'SORT (REVERSE ARRIVAL) UTF-8 ALL',
    'SORT (SIZE) UTF-8 ALL', 'SORT (DATE) UTF-8 ALL',
    'THREAD REFERENCES UTF-8 ALL', 'THREAD ORDEREDSUBJECT UTF-8 ALL',
    'STORE 1 +FLAGS (\\Answered)', 'STORE 1 -FLAGS.SILENT (\\Seen)',
    'STORE 2 FLAGS ($New \\Draft)', 'STORE 1:* +FLAGS (NonJunk)',
    'UID STORE 1:* (UNCHANGEDSINCE 1) +FLAGS (\\Seen)',
    'FETCH 1:* (FLAGS)', 'SEARCH KEYWORD NonJunk',
    '@2 NOOP', '@2 FETCH 1:* (FLAGS)',
    'APPEND INBOX %s {5+}\r\nnew 1' % DATE,
    '@2 NOOP', 'NOOP', 'FETCH 4 (FLAGS)', '@2 FETCH 4 (FLAGS)',
    'COPY 1 Work', 'MOVE 2 Work', 'UID COPY 1:* Sent', 'COPY 1 INBOX',
    'FETCH 1:* (UID FLAGS)',
    'STORE 1 +FLAGS (\\Deleted)', 'UID EXPUNGE 99', 'EXPUNGE',
    'FETCH 1:* (UID FLAGS)', '@2 NOOP', '@2 FETCH 1:* (UID FLAGS)',
    'STATUS Work (MESSAGES RECENT UIDNEXT UNSEEN)',
    'STATUS Sent (MESSAGES RECENT UIDNEXT)',
    'EXAMINE Work', 'FETCH 1:* (UID FLAGS RFC822.SIZE)',
    'STORE 1 +FLAGS (\\Seen)', 'UNSELECT',
    'SELECT Work', 'FETCH 1:* (UID FLAGS)', 'CLOSE',
    'SELECT Work', 'FETCH 1:* (UID FLAGS)', 'CLOSE',
    'RENAME Work Job', 'LIST "" "*"', 'SELECT Job', 'FETCH 1:* (UID FLAGS)',
    'UID SEARCH ALL', 'CLOSE',
    'DELETE Job', 'LIST "" "*"', 'DELETE "Job/Sub"', 'LIST "" "*"',
    'DELETE Nonexistent', 'SELECT Nonexistent', 'CREATE INBOX',
    'SELECT "&AMk-t&AOk-"', 'APPEND "&AMk-t&AOk-" %s {5+}\r\nhello' % DATE,
    'STATUS "&AMk-t&AOk-" (MESSAGES RECENT)', 'FETCH 1 (FLAGS)', 'CLOSE',
    'STATUS INBOX (MESSAGES RECENT UNSEEN)', 'LIST "" "*"', 'LOGOUT',
]
# Not here: RENAME INBOX, which mdbox does by renaming INBOX's directory
# (the new folder keeps INBOX's UIDVALIDITY and UIDs) and the store by a
# MOVE into a new folder (new UIDs, \Recent there as after any COPY);
# test_dovecot_imap.py's test_rename_inbox checks it.


# The plugin keeps MODSEQs from a folder's first open (they follow the
# store's), so its SELECT and EXAMINE always say HIGHESTMODSEQ, as RFC
# 7162 asks of a server that keeps them; mdbox says it once a client
# used CONDSTORE in the folder.  Left out of the comparison.
HMS_LINE = "* OK [HIGHESTMODSEQ M] Highest\r\n"


def norm(b):
    s = b.decode("utf-8", "replace")
    s = re.sub(r"\(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)", "(T)", s)
    s = re.sub(r"UIDVALIDITY \d+", "UIDVALIDITY V", s)
    s = re.sub(r"(HIGHESTMODSEQ|MODSEQ) \(?\d+\)?", r"\1 M", s)
    s = re.sub(r"(COPYUID|APPENDUID) \d+", r"\1 V", s)
    s = re.sub(r'\(TAG "[^"]*"\)', "(TAG T)", s)
    return s


def run(stack, user, session):
    sessions = {1: stack.imap(user)}
    out = []
    for cmd in session:
        if cmd.startswith("!lmtp "):
            # a delivery through Dovecot's LMTP, into either storage
            code, _ = stack.lmtp_send("s@example.test", [user],
                                      cmd[6:].encode())[0]
            out.append((0, cmd, [], str(code)))
            continue
        n = 1
        if cmd[0] == "@":
            n, cmd = int(cmd[1]), cmd[3:]
            if n not in sessions:
                sessions[n] = stack.imap(user)
        c = sessions[n]
        try:
            line, untagged = raw(c, cmd)
        except EOFError as e:        # LOGOUT: BYE, then the tagged OK
            line, untagged = b"? closed", [str(e).encode()]
        out.append((n, cmd.split("\r\n")[0],
                    [norm(u) for u in untagged if norm(u) != HMS_LINE],
                    norm(line.split(b" ", 1)[1])))
    for n, c in sessions.items():
        if n != 1:
            c.logout()
    return out




ENV_HDRS = (
    b'Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n'
    b'From: "Fred \\"The\\" Flintstone" <fred@example.test>, '
    b'wilma@example.test\r\n'
    b'From: second@example.test\r\n'
    b'Sender: =?UTF-8?B?w4lkaXRo?= <edith@example.test>\r\n'
    b'Reply-To: list:;\r\n'
    b'To: undisclosed-recipients:;, Team: a@example.test, "B, Bee"\r\n'
    b' <b@example.test>;, c@example.test\r\n'
    b'Cc: (comment) d@example.test (another),\r\n e@example.test,\r\n'
    b'\tGr\xc3\xbc\xc3\x9fe <f@example.test>\r\n'
    b'Bcc:\r\n'
    b'Subject: =?ISO-8859-1?Q?caf=E9?= and\r\n a folded line\r\n'
    b'In-Reply-To: <a@example.test> (was: b)\r\n'
    b'Message-ID:   <id1@example.test>  \r\n'
    b'X-Other: x\r\n\r\nbody\r\n')


# Extensions and their corner cases: QRESYNC/CONDSTORE, MULTIAPPEND,
# binary literals, ESEARCH, LIST-EXTENDED, keywords
SESSION2 = [
    'ENABLE QRESYNC',
    'CREATE Box',
    'APPEND Box (\\Seen) %s %s (\\Flagged kw1) %s %s () %s %s' % (
        DATE, lit(MSG), DATE, lit(MIME), DATE, lit(MSG)),
    'APPEND Box (\\Draft) %s ~{6+}\r\nab\x00cd\n' % DATE,
    'SELECT Box (CONDSTORE)',
    'FETCH 1:* (UID FLAGS RFC822.SIZE BINARY.SIZE[1])',
    'FETCH 4 (BINARY.PEEK[1] BODY.PEEK[])',
    'STORE 1:2 +FLAGS (kw2 $Forwarded)', 'STORE 3 +FLAGS (\\Deleted)',
    'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)',
    'UID SEARCH RETURN (ALL COUNT) KEYWORD kw2',
    'SEARCH RETURN (SAVE) FLAGGED', 'FETCH $ (UID)',
    'UID EXPUNGE 3', 'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)',
    'CLOSE',
    'SELECT Box (QRESYNC (1 1))',
    'STATUS Box (MESSAGES UIDNEXT UNSEEN RECENT)',
    'LIST "" ""', 'LIST "" "%/%"',
    'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*"',
    'LIST "" "*" RETURN (CHILDREN SUBSCRIBED)',
    'CREATE "Box/Kid"', 'SUBSCRIBE "Box/Kid"',
    'LIST (RECURSIVEMATCH SUBSCRIBED) "" "%"',
    'STORE 1 FLAGS ()', 'STORE 1 +FLAGS (\\Seen)',
    'FETCH 1:* (FLAGS)', 'SEARCH UNKEYWORD kw1', 'SEARCH DRAFT',
    'SEARCH ON 7-Feb-1994', 'SEARCH SINCE 1-Jan-1990 BEFORE 1-Jan-2000',
    'SEARCH SENTON 7-Feb-1994', 'SEARCH CHARSET UTF-8 TEXT "Grüße"',
    'GETQUOTA "User quota"', 'UNSELECT',
    # ENVELOPE from headers that make its parse work: folded lines, a
    # second From, groups, comments, encoded and raw 8-bit words, no
    # Date, a header with no body, none at all.  The second FETCH is
    # built from the headers the first put in the cache (the plugin's
    # own path, mstore-mail.c), the first from the message
    'CREATE Env',
    'APPEND Env %s %s' % (DATE, lit(ENV_HDRS)),
    'APPEND Env %s {28+}\r\nSubject: no body, no newline' % DATE,
    'APPEND Env %s {9+}\r\n\r\nno head' % DATE,
    'APPEND Env %s %s' % (DATE, lit(MSG)),
    'EXAMINE Env',
    'FETCH 1:* (ENVELOPE)', 'FETCH 1:4 (ENVELOPE)', 'UID FETCH 2,4 (ENVELOPE)',
    'LOGOUT',
]


def pop3_run(stack, user):
    """A POP3 session, and a second one after DELE: every reply."""
    out = []
    for cmds in (["STAT", "LIST", "UIDL", "RETR 1", "TOP 2 0", "TOP 3 1",
                  "LIST 2", "UIDL 3", "DELE 1", "STAT", "LIST", "RSET",
                  "STAT", "DELE 2", "QUIT"],
                 ["STAT", "LIST", "UIDL", "RETR 3", "QUIT"]):
        p = stack.pop3(user)
        for cmd in cmds:
            if cmd == "QUIT":
                out.append((cmd, p.quit()))
                break
            multi = cmd in ("LIST", "UIDL") or cmd.split()[0] in (
                "RETR", "TOP")
            try:
                out.append((cmd, p._longcmd(cmd) if multi else
                            p._shortcmd(cmd)))
            except poplib.error_proto as e:
                out.append((cmd, ("ERR", str(e))))
    # UIDLs are %08Xu%08Xv: the UIDVALIDITY half differs
    return [(c, re.sub(rb"([0-9a-fA-F]{8})[0-9a-fA-F]{8}", rb"\1V",
                       repr(r).encode()))
            for c, r in out]


def compare(ours, theirs):
    diffs = []
    for (n, cmd, u1, l1), (_, _, u2, l2) in zip(ours, theirs):
        if u1 != u2 or l1 != l2:
            diffs.append(f"[{n}] {cmd}\n  mstore: {u1} {l1!r}\n"
                         f"  mdbox:  {u2} {l2!r}")
    assert not diffs, "\n".join(diffs)
    assert len(ours) == len(theirs)


PARITY = pytest.mark.dovecot(users=("alice", "mdbox"), user_fields={
    "mdbox": "userdb_mail=mdbox:~/mdbox"})


@PARITY
def test_same_replies_as_mdbox(stack):
    compare(run(stack, "alice", SESSION), run(stack, "mdbox", SESSION))


@PARITY
def test_same_replies_as_mdbox_extensions(stack):
    compare(run(stack, "alice", SESSION2), run(stack, "mdbox", SESSION2))


@PARITY
def test_same_pop3_replies_as_mdbox(stack):
    for user in ("alice", "mdbox"):
        c = stack.imap(user)
        for i in range(3):
            c.append("INBOX", None, None, MSG.replace(b"hello", b"m%d" % i))
        c.logout()
    ours, theirs = pop3_run(stack, "alice"), pop3_run(stack, "mdbox")
    assert ours == theirs


# Several sessions of one folder while mail arrives and others change
# it: what each is told, and when
MSG3 = "Subject: three\r\nMessage-ID: <3@x>\r\n\r\nthree\r\n"
SESSION3 = [
    'SELECT INBOX', '@2 SELECT INBOX', '@3 EXAMINE INBOX',
    '!lmtp ' + MSG3, '!lmtp ' + MSG3.replace("three", "four"),
    'NOOP', '@2 NOOP', '@3 NOOP',
    '@2 STORE 1 +FLAGS (\\Seen \\Flagged)', 'NOOP', '@3 NOOP',
    'STORE 2 +FLAGS (\\Deleted)', 'EXPUNGE', '@2 NOOP', '@3 NOOP',
    '!lmtp ' + MSG3.replace("three", "five"),
    '@3 FETCH 1:* (UID FLAGS)', 'FETCH 1:* (UID FLAGS)',
    '@2 UID FETCH 1:* (UID FLAGS)', '@2 CHECK',
    'STATUS INBOX (MESSAGES RECENT UNSEEN UIDNEXT)',
    '@2 CLOSE', '@2 SELECT INBOX', 'CLOSE', 'SELECT INBOX',
    '@3 NOOP', 'LOGOUT',
]


@PARITY
def test_same_replies_as_mdbox_several_sessions(stack):
    compare(run(stack, "alice", SESSION3), run(stack, "mdbox", SESSION3))


def address_flood(to_n, cc_n):
    """A message whose To and Cc hold to_n and cc_n addresses, folded
    50 to a line."""
    def field(name, first, n):
        addrs = ["u%d@example.test" % i for i in range(first, first + n)]
        lines = [", ".join(addrs[i:i + 50]) for i in range(0, n, 50)]
        return name.encode() + b": " + ",\r\n ".join(lines).encode() + b"\r\n"
    return (b"From: flood@example.test\r\nSubject: many\r\n" +
            field("To", 0, to_n) + field("Cc", to_n, cc_n) +
            b"Message-ID: <flood@example.test>\r\n\r\nbody\r\n")


@PARITY
def test_envelope_address_limit_as_mdbox(stack, monkeypatch):
    """Dovecot parses at most 100,000 addresses of one message
    (MESSAGE_PART_DATA_MAX_TOTAL_ADDRESSES, counted per mail over its
    fields).  The plugin builds ENVELOPE itself (mstore-mail.c); a
    message over the limit gets the same cut ENVELOPE as on mdbox at each
    fetch (its headers are over Dovecot's 64 KiB cache record limit:
    every fetch parses the message)."""
    # the ENVELOPE line is a few MB; imaplib refuses lines over 1 MB
    monkeypatch.setattr(imaplib, "_MAXLINE", 64 << 20)
    to_n, cc_n = 60000, 40050
    msg = address_flood(to_n, cc_n)
    session = ['CREATE Flood', 'APPEND Flood %s %s' % (DATE, lit(msg)),
               'APPEND Flood %s %s' % (DATE, lit(MSG)),
               'EXAMINE Flood', 'FETCH 1:2 (ENVELOPE)',
               'FETCH 1 (ENVELOPE)', 'FETCH 2,1 (ENVELOPE)', 'LOGOUT']
    ours, theirs = run(stack, "alice", session), run(stack, "mdbox", session)
    envs = [u for _, cmd, untagged, _ in ours if "ENVELOPE" in cmd
            for u in untagged if u.startswith("* 1 FETCH")]
    assert len(envs) == 3
    for env in envs:
        # every address is (NIL NIL "name" "example.test"); From's one
        # is counted first, then To's 60,000, then Cc's up to the
        # limit: 39,999 of its 40,050 (From shows three times: as
        # Sender and Reply-To too)
        assert env.count('"example.test")') == 100000 + 2, len(env)
        assert '"u%d" "example.test"' % (to_n + 39998) in env
        assert '"u%d" "example.test"' % (to_n + 39999) not in env
    compare(ours, theirs)
