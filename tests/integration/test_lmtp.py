"""mstore-lmtpd with real clients: Python's smtplib.LMTP for every
command and extension, raw sockets for what smtplib cannot send
(pipelining in one write, bare LF, NUL, 8-bit, 1 MB lines, BDAT,
disconnects), multi-recipient transactions, limits, and mstored going
away.  Each module starts its own mstored and mstore-lmtpd on free
127.0.0.1 ports; what is stored is read back through the mstore
protocol (lmtp_env.MsClient) and the log's record counts."""

import os
import smtplib
import socket
import threading
import time

import pytest

from lmtp_env import Backend, split_headers, wait_for

MAX_SIZE = 256 * 1024


@pytest.fixture(scope="module")
def be(tmp_path_factory):
    b = Backend(str(tmp_path_factory.mktemp("lmtp")),
                f"trusted_gateways = 127.0.0.2\n"
                f"max_message_size = {MAX_SIZE}\n").start()
    try:
        for u in ("alice", "bob", "carol", "dave", "full", "near", "big",
                  "raw", "pipe", "bdat", "xcl", "j\u00f6rg", "gone", "uxs"):
            b.user_add(u)
        c = b.client("bob")
        c.mbox_create("Lists")
        c.close()
        yield b
    except BaseException:
        b.kill_all()
        raise
    rc = b.stop()
    assert rc == 0, "mstore-lmtpd did not stop cleanly on SIGTERM"


def lmtp(be, source=None):
    l = smtplib.LMTP("127.0.0.1", be.port, timeout=30,
                     source_address=(source, 0) if source else None)
    code, _ = l.ehlo("gw.example.test")
    assert code == 250
    return l


class Raw:
    """A raw LMTP connection: send bytes, read reply lines."""

    def __init__(self, be, source=None):
        self.s = socket.create_connection(
            ("127.0.0.1", be.port), timeout=30,
            source_address=(source, 0) if source else None)
        self.f = self.s.makefile("rb")
        assert self.line().startswith(b"220 ")

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        ln = self.f.readline()
        if not ln:
            raise EOFError("connection closed")
        return ln.rstrip(b"\r\n")

    def reply(self):
        """One (possibly multi-line) reply: (code, [texts])."""
        texts = []
        while True:
            ln = self.line()
            texts.append(ln[4:])
            if ln[3:4] != b"-":
                return int(ln[:3]), texts

    def replies(self, n):
        return [self.reply()[0] for _ in range(n)]

    def close(self):
        self.f.close()
        self.s.close()


def msg(subject, body=b"hello\r\n"):
    return (b"From: s@x.test\r\nTo: r@example.test\r\nSubject: " +
            subject.encode() + b"\r\n\r\n" + body)


def only_message(be, user, mbox="INBOX"):
    bodies = be.bodies(user, mbox)
    assert len(bodies) >= 1
    return bodies[-1]


# ---- smtplib: commands and extensions ------------------------------------

def test_lhlo_announces_extensions(be):
    l = lmtp(be)
    f = l.esmtp_features
    for ext in ("pipelining", "enhancedstatuscodes", "8bitmime", "chunking",
                "smtputf8"):
        assert ext in f, ext
    assert f["size"] == str(MAX_SIZE)
    assert "xclient" not in f and "xforward" not in f  # not trusted
    l.quit()
    t = lmtp(be, source="127.0.0.2")
    assert "xclient" in t.esmtp_features and "xforward" in t.esmtp_features
    t.quit()


def test_deliver_one(be):
    l = lmtp(be)
    m = msg("one", b"line 1\r\n.starts with a dot\r\nlast\r\n")
    assert l.mail("sender@x.test") == (250, b"2.1.0 Sender ok")
    assert l.rcpt("alice@example.test")[0] == 250
    code, text = l.data(m)
    assert code == 250 and text.startswith(b"2.0.0 Delivered")
    l.quit()
    stored = only_message(be, "alice")
    added, rest = split_headers(stored)
    assert rest == m  # byte-identical below the added lines
    assert added[0] == b"Return-Path: <sender@x.test>"
    assert added[1] == b"Delivered-To: <alice@example.test>"
    assert added[2].startswith(b"Received: from gw.example.test ([127.0.0.1])")
    assert b"by lmtp.example.test (mstore-lmtpd) with LMTP id" in \
        b"".join(added)
    assert b"for <alice@example.test>;" in b"".join(added)


def test_simple_commands(be):
    l = lmtp(be)
    assert l.noop()[0] == 250
    assert l.docmd("NOOP", "with an argument")[0] == 250
    assert l.verify("alice") == (252, b"2.5.2 Cannot VRFY user; send a "
                                      b"message to find out")
    assert l.docmd("HELO", "x")[0] == 500
    assert l.docmd("EHLO", "x")[0] == 500
    assert l.docmd("FOO")[0] == 500
    assert l.docmd("RCPT TO:<alice@example.test>")[0] == 503
    assert l.docmd("DATA")[0] == 503
    assert l.docmd("MAIL FROM:<a@b.test> BODY=BINARYMIME")[0] == 555
    assert l.docmd("MAIL FROM:<a@b.test> RET=FULL")[0] == 555
    assert l.docmd("MAIL FROM:a@b.test")[0] == 501
    assert l.mail("a@b.test", ["BODY=8BITMIME"])[0] == 250
    assert l.docmd("MAIL FROM:<a@b.test>")[0] == 503  # nested
    assert l.docmd("DATA")[0] == 503  # no recipient
    assert l.rset()[0] == 250
    assert l.docmd("RCPT TO:<alice@example.test>")[0] == 503
    assert l.docmd("RCPT TO:<alice@example.test> NOTIFY=NEVER")[0] == 555
    code, _ = l.docmd("QUIT")
    assert code == 221
    # before LHLO
    l2 = smtplib.LMTP("127.0.0.1", be.port, timeout=30)
    assert l2.docmd("MAIL FROM:<a@b.test>")[0] == 503
    l2.close()


def test_recipient_mapping(be):
    l = lmtp(be)
    assert l.mail("s@x.test")[0] == 250
    assert l.rcpt("Alice@EXAMPLE.TEST")[0] == 250       # case
    assert l.rcpt("bob+Lists@other.test")[0] == 250     # detail exists
    assert l.rcpt("carol+NoSuchBox@example.test")[0] == 250  # -> INBOX
    assert l.rcpt("nobody@example.test") == (550, b"5.1.1 No such user")
    assert l.rcpt("alice@elsewhere.test") == (550,
                                              b"5.1.2 Domain not handled here")
    m = msg("mapping")
    n_alice = len(be.bodies("alice"))
    assert l.data(m)[0] == 250
    assert [l.getreply()[0] for _ in range(2)] == [250, 250]
    l.quit()
    assert len(be.bodies("alice")) == n_alice + 1
    assert split_headers(be.bodies("bob", "Lists")[-1])[1] == m
    assert split_headers(only_message(be, "carol"))[1] == m
    assert be.bodies("bob") == []  # not in INBOX


def test_multi_recipient_mixed(be):
    m = msg("multi", b"x" * 2000 + b"\r\n")
    # full: at its message limit already -> refused at RCPT
    be.quota("full", 0, 1)
    l = lmtp(be)
    l.sendmail("s@x.test", ["full@example.test"], msg("fill"))
    l.quit()
    # near: room for a small message, not for this one -> refused after DATA
    be.quota("near", 1000, 0)
    before = be.body_records()
    l = lmtp(be)
    assert l.mail("s@x.test")[0] == 250  # no SIZE: "near" passes RCPT
    assert l.rcpt("alice@example.test")[0] == 250
    assert l.rcpt("unknown@example.test")[0] == 550
    assert l.rcpt("full@example.test") == (552, b"5.2.2 Mailbox full")
    assert l.rcpt("near@example.test")[0] == 250
    assert l.rcpt("dave@example.test")[0] == 250
    code, text = l.data(m)
    replies = [(code, text)] + [l.getreply() for _ in range(2)]
    l.quit()
    assert [r[0] for r in replies] == [250, 552, 250]
    assert replies[1][1] == b"5.2.2 Mailbox full"
    a = be.bodies("alice")[-1]
    d = only_message(be, "dave")
    assert a == d  # one body for every recipient
    added, rest = split_headers(a)
    assert rest == m
    assert not any(x.startswith(b"Delivered-To") for x in added)
    assert be.body_records() == before + 1  # stored once
    assert be.bodies("near") == []


def test_smtputf8(be):
    l = lmtp(be)
    assert l.mail("s@x.test")[0] == 250
    l.command_encoding = "utf-8"  # smtplib would refuse to send it
    assert l.rcpt("j\u00f6rg@example.test")[0] == 553  # no SMTPUTF8
    l.rset()
    m = "Subject: gr\u00fc\u00dfe\r\n\r\n\u00e4\u00f6\u00fc\r\n".encode()
    l.sendmail("s\u00e9@x.test", ["J\u00f6rg@example.test"], m,
               mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    l.quit()
    stored = only_message(be, "j\u00f6rg")
    added, rest = split_headers(stored)
    assert rest == m
    assert b"with UTF8LMTP" in b"".join(added)


def test_xclient_and_xforward(be):
    l = lmtp(be)  # 127.0.0.1: not trusted
    assert l.docmd("XCLIENT", "NAME=evil.test")[0] == 550
    assert l.docmd("XFORWARD", "ADDR=192.0.2.9")[0] == 550
    l.quit()
    t = lmtp(be, source="127.0.0.2")
    code, _ = t.docmd("XCLIENT", "NAME=mx1.example.test ADDR=192.0.2.7 "
                      "HELO=client+20helo.test LOGIN=[UNAVAILABLE]")
    assert code == 220  # a new greeting: LHLO again
    assert t.docmd("MAIL FROM:<a@b.test>")[0] == 503
    t.ehlo("gw2.example.test")
    t.sendmail("s@x.test", ["xcl@example.test"], msg("xclient"))
    received = b"".join(split_headers(only_message(be, "xcl"))[0])
    assert b"from client helo.test (mx1.example.test [192.0.2.7])" in \
        received
    assert t.docmd("XFORWARD", "NAME=[UNAVAILABLE] ADDR=198.51.100.1 "
                   "HELO=fwd.test")[0] == 250
    t.sendmail("s@x.test", ["xcl@example.test"], msg("xforward"))
    received = b"".join(split_headers(only_message(be, "xcl"))[0])
    assert b"from fwd.test (mx1.example.test [198.51.100.1])" in received
    t.quit()


def test_unix_socket(be):
    l = smtplib.LMTP(be.lsock, timeout=30)
    l.ehlo("local")
    l.sendmail("s@x.test", ["uxs@example.test"], msg("unix"))
    l.quit()
    added, rest = split_headers(only_message(be, "uxs"))
    assert rest == msg("unix")
    assert b"[unix]" in b"".join(added)


# ---- raw sockets ---------------------------------------------------------

def test_pipelining(be):
    r = Raw(be)
    n = len(be.bodies("pipe"))
    r.send(b"LHLO p\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<pipe@example.test>"
           b"\r\nRCPT TO:<nope@example.test>\r\nRCPT TO:<dave@example.test>"
           b"\r\nDATA\r\n")
    assert r.reply()[0] == 250
    assert r.replies(5) == [250, 250, 550, 250, 354]
    # the message, then a whole second transaction and QUIT, in one write
    r.send(b"Subject: p1\r\n\r\nbody\r\n.\r\n"
           b"MAIL FROM:<s@x.test>\r\nRCPT TO:<pipe@example.test>\r\n"
           b"NOOP\r\nRSET\r\nQUIT\r\n")
    assert r.replies(2) == [250, 250]  # pipe, dave
    assert r.replies(5) == [250, 250, 250, 250, 221]
    r.close()
    assert len(be.bodies("pipe")) == n + 1


def test_pipelining_flood(be):
    # far more replies than the server queues for a client that does not
    # read: it stops reading, and goes on once the replies are read
    # (the client writes from a thread while it reads, as RFC 2920 asks)
    n = 30000
    r = Raw(be)
    t = threading.Thread(target=r.send, args=(
        b"LHLO flood\r\n" + b"NOOP\r\n" * n + b"QUIT\r\n",))
    t.start()
    assert r.reply()[0] == 250
    assert r.replies(n) == [250] * n
    assert r.reply()[0] == 221
    t.join(30)
    r.close()


def raw_deliver(be, user, data, dot=True):
    """Send one message (already dot-stuffed and ended when dot)."""
    r = Raw(be)
    r.send(b"LHLO raw\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<" +
           user.encode() + b"@example.test>\r\nDATA\r\n")
    assert r.replies(4) == [250, 250, 250, 354]
    r.send(data)
    code = r.reply()[0]
    r.send(b"QUIT\r\n")
    r.close()
    return code


def test_bare_lf_and_smuggling(be):
    before = len(be.bodies("raw"))
    # bare LF lines are stored with CRLF; "\n.\n" and "\n.\r\n" do not
    # end the message, so the MAIL after them is message text
    data = (b"Subject: lf\nX: 1\n\nline\n.\nMAIL FROM:<evil@x.test>\n"
            b"\n.\r\nRCPT TO:<x@y>\r\nend\r\n.\r\n")
    assert raw_deliver(be, "raw", data) == 250
    bodies = be.bodies("raw")
    assert len(bodies) == before + 1
    rest = split_headers(bodies[-1])[1]
    assert rest == (b"Subject: lf\r\nX: 1\r\n\r\nline\r\n.\r\n"
                    b"MAIL FROM:<evil@x.test>\r\n\r\n.\r\nRCPT TO:<x@y>\r\n"
                    b"end\r\n")


def test_nul_and_8bit(be):
    body = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"")
    data = b"Subject: bin\r\n\r\n" + body + b"\r\n\x00\x00\r\n"
    assert raw_deliver(be, "raw", data + b".\r\n") == 250
    assert split_headers(be.bodies("raw")[-1])[1] == data


def test_long_lines(be):
    # a 1 MB command line: 500, and the session goes on
    r = Raw(be)
    r.send(b"NOOP " + b"x" * (1 << 20) + b"\r\nNOOP\r\n")
    assert r.reply() == (500, [b"5.5.2 Line too long"])
    assert r.reply()[0] == 250
    r.close()
    # a message line of 1 MB fits a 256k limit? no: use a 200 kB line here
    # and the 1 MB data line in the limits module below
    line = b"y" * 200000
    data = b"Subject: long\r\n\r\n" + line + b"\r\n"
    assert raw_deliver(be, "raw", data + b".\r\n") == 250
    assert split_headers(be.bodies("raw")[-1])[1] == data


def test_size_limit(be):
    before = be.body_records()
    l = lmtp(be)
    code, text = l.mail("s@x.test", [f"SIZE={MAX_SIZE + 1}"])
    assert (code, text[:5]) == (552, b"5.3.4")
    l.rset()
    # a message just over the limit (our added lines do not count)
    hdr = b"Subject: big\r\n\r\n"
    over = hdr + b"z" * (MAX_SIZE - len(hdr) - 2 + 1) + b"\r\n"
    assert len(over) == MAX_SIZE + 1
    assert l.mail("s@x.test")[0] == 250
    assert l.rcpt("big@example.test")[0] == 250
    assert l.rcpt("dave@example.test")[0] == 250
    code, text = l.data(over)
    assert (code, text[:5]) == (552, b"5.3.4")
    assert l.getreply()[0] == 552
    # exactly at the limit: stored
    exact = over[:-3] + b"\r\n"
    assert len(exact) == MAX_SIZE
    assert l.mail("s@x.test")[0] == 250
    assert l.rcpt("big@example.test")[0] == 250
    assert l.data(exact)[0] == 250
    l.quit()
    assert be.body_records() == before + 1
    assert [split_headers(b)[1] for b in be.bodies("big")] == [exact]


def test_disconnect_mid_data(be):
    before = be.body_records()
    n = len(be.bodies("gone"))
    r = Raw(be)
    r.send(b"LHLO x\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<gone@example.test>"
           b"\r\nDATA\r\n")
    assert r.replies(4) == [250, 250, 250, 354]
    r.send(b"Subject: half\r\n\r\n" + b"a" * 10000)
    r.close()
    # the same with BDAT, in the middle of a chunk
    r = Raw(be)
    r.send(b"LHLO x\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<gone@example.test>"
           b"\r\nBDAT 1000 LAST\r\nSubject: half\r\n")
    assert r.replies(3) == [250, 250, 250]
    r.close()
    wait_for(lambda: be.lmtpd_log().count("nothing stored") >= 2, 10,
             "mstore-lmtpd to see both disconnects")
    assert len(be.bodies("gone")) == n
    assert be.body_records() == before
    # and the daemon is fine
    l = lmtp(be)
    l.sendmail("s@x.test", ["gone@example.test"], msg("after"))
    l.quit()
    assert len(be.bodies("gone")) == n + 1


def test_bdat_many_chunks(be):
    r = Raw(be)
    r.send(b"LHLO b\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<bdat@example.test>"
           b"\r\nRCPT TO:<dave@example.test>\r\n")
    assert r.replies(4) == [250, 250, 250, 250]
    parts = [b"Subject: chunks\r\n\r\n"] + \
        [(b"chunk %d .\r\n.\r\n" % i) for i in range(60)]
    whole = b"".join(parts)
    for p in parts[:-1]:
        r.send(b"BDAT %d\r\n" % len(p) + p)
    r.send(b"BDAT %d LAST\r\n" % len(parts[-1]) + parts[-1])
    codes = r.replies(len(parts) - 1)
    assert codes == [250] * (len(parts) - 1)
    assert r.replies(2) == [250, 250]  # one per recipient
    # BDAT 0 LAST ends a message too; BDAT without MAIL: bytes eaten, 503
    r.send(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<bdat@example.test>\r\n"
           b"BDAT 5\r\nhelloBDAT 0 LAST\r\nBDAT 3\r\nabcNOOP\r\n"
           b"DATA\r\n")
    assert r.replies(7) == [250, 250, 250, 250, 503, 250, 503]
    r.send(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<bdat@example.test>\r\n"
           b"BDAT 1\r\nxDATA\r\nRSET\r\nQUIT\r\n")
    assert r.replies(6) == [250, 250, 250, 503, 250, 221]
    r.close()
    got = [split_headers(b)[1] for b in be.bodies("bdat")]
    assert got == [whole, b"hello"]


def test_store_unavailable(be):
    # mstored stops: RCPT gets 451 4.3.0; when it is back, mail flows
    be.stop_mstored()
    l = lmtp(be)
    assert l.mail("s@x.test")[0] == 250
    assert l.rcpt("alice@example.test") == (451, b"4.3.0 Store unavailable;"
                                                 b" try later")
    l.quit()
    be.start_mstored()
    wait_for(lambda: be.lmtpd_log().count("event=store.connected") >= 2, 15,
             "mstore-lmtpd to reconnect")
    n = len(be.bodies("alice"))
    l = lmtp(be)
    l.sendmail("s@x.test", ["alice@example.test"], msg("back"))
    l.quit()
    assert len(be.bodies("alice")) == n + 1


# ---- limits (a second pair with small limits) ----------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    b = Backend(str(tmp_path_factory.mktemp("lmtp-small")),
                "max_message_size = 2M\nmax_recipients = 3\n"
                "max_errors = 4\ncommand_timeout = 1s\ndata_timeout = 1s\n"
                "max_sessions = 6\nmax_sessions_per_client = 3\n"
                "quota_reply = temporary\nbare_lf = reject\n",
                unix_socket=False).start()
    try:
        for u in ("a", "b", "c", "d", "q"):
            b.user_add(u)
        yield b
    except BaseException:
        b.kill_all()
        raise
    assert b.stop() == 0


def test_limit_recipients(small):
    l = lmtp(small)
    l.mail("s@x.test")
    for u in "abc":
        assert l.rcpt(f"{u}@example.test")[0] == 250
    assert l.rcpt("d@example.test") == (452, b"4.5.3 Too many recipients")
    l.quit()


def test_limit_errors(small):
    r = Raw(small)
    r.send(b"FOO\r\nBAR\r\nBAZ\r\nQUX\r\nNOOP\r\n")
    assert r.replies(4) == [500, 500, 500, 500]
    assert r.reply() == (421, [b"4.7.0 Too many errors; closing"])
    with pytest.raises(EOFError):
        r.line()
    r.close()


def test_limit_timeouts(small):
    r = Raw(small)
    t0 = time.monotonic()
    assert r.reply()[0] == 421  # idle: command_timeout
    assert time.monotonic() - t0 < 5
    r.close()
    r = Raw(small)
    r.send(b"LHLO x\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.test>\r\n"
           b"DATA\r\n")
    assert r.replies(4) == [250, 250, 250, 354]
    r.send(b"Subject: slow\r\n")
    assert r.reply() == (421, [b"4.4.2 Timeout; closing"])
    r.close()
    assert small.bodies("a") == []


def test_limit_sessions(small):
    time.sleep(0.3)  # sessions of earlier tests are gone
    mine = [Raw(small) for _ in range(3)]
    r = socket.create_connection(("127.0.0.1", small.port), timeout=10)
    assert r.makefile("rb").readline().startswith(b"421 4.7.0")
    r.close()
    # from another address: up to max_sessions in all
    other = [Raw(small, source="127.0.0.3") for _ in range(3)]
    r = socket.create_connection(("127.0.0.1", small.port), timeout=10,
                                 source_address=("127.0.0.4", 0))
    assert r.makefile("rb").readline().startswith(b"421 4.3.2")
    r.close()
    for x in mine + other:
        x.close()


def test_quota_temporary_and_bare_lf_reject(small):
    small.quota("q", 0, 1)
    l = lmtp(small)
    l.sendmail("s@x.test", ["q@example.test"], msg("fill"))
    assert l.mail("s@x.test")[0] == 250
    assert l.rcpt("q@example.test") == (452, b"4.2.2 Mailbox full")
    l.rset()
    l.quit()
    n = len(small.bodies("b"))
    r = Raw(small)
    r.send(b"LHLO x\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<b@example.test>\r\n"
           b"DATA\r\n")
    assert r.replies(4) == [250, 250, 250, 354]
    r.send(b"Subject: lf\nbody\r\n.\r\n")
    assert r.reply()[0] == 550
    r.close()
    assert len(small.bodies("b")) == n


def test_megabyte_data_line(small):
    line = b"w" * (1 << 20)
    data = b"Subject: 1MB line\r\n\r\n" + line + b"\r\n"
    r = Raw(small)
    r.send(b"LHLO x\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<c@example.test>\r\n"
           b"DATA\r\n")
    assert r.replies(4) == [250, 250, 250, 354]
    r.send(data + b".\r\n")
    assert r.reply()[0] == 250
    r.close()
    assert split_headers(small.bodies("c")[-1])[1] == data


# ---- Dovecot's indexer told of folders that got mail ---------------------

class FakeIndexer:
    """A unix socket that reads what Dovecot's indexer would: every
    connection's bytes, in the order the connections came."""

    def __init__(self, path):
        self.path = path
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.running = True
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(10)
            data = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
            c.close()
            with self.lock:
                self.conns.append(data)

    def lines(self):
        with self.lock:
            return [ln for d in self.conns for ln in d.split(b"\n") if ln]

    def close(self):
        self.running = False
        self.t.join(5)
        self.sock.close()
        os.unlink(self.path)


def test_indexer_notices(tmp_path):
    """[lmtp] dovecot_indexer: after deliveries, mstore-lmtpd queues each
    folder that got mail with Dovecot's indexer (its protocol: VERSION,
    then APPEND <tag 0> <user> <folder>), each folder once however many
    messages it got, folder names as Dovecot's namespace has them; while
    the socket is gone, mail is still delivered and the folders wait;
    when it is back, they go."""
    root = str(tmp_path)
    isock = os.path.join(root, "indexer")
    b = Backend(root, "dovecot_indexer = indexer\ndovecot_separator = .\n")
    fake = FakeIndexer(isock)
    b.start()
    try:
        for u in ("alice", "bob"):
            b.user_add(u)
        c = b.client("alice")
        c.mbox_create("Work")
        c.mbox_create("Work/2026")
        c.close()
        l = lmtp(b)
        for i in range(5):
            l.sendmail("s@x.test", ["alice@example.test"], msg(f"in {i}"))
        # two recipients in one transaction (smtplib reads one reply
        # after DATA: the raw form)
        r = Raw(b)
        r.send(b"LHLO x\r\nMAIL FROM:<s@x.test>\r\n"
               b"RCPT TO:<alice+Work/2026@example.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
        assert r.replies(5) == [250, 250, 250, 250, 354]
        r.send(msg("two") + b".\r\n")
        assert r.replies(2) == [250, 250]
        r.close()
        l.sendmail("s@x.test", ["alice+Work/2026@example.test"], msg("3"))
        # a detail folder that does not exist: INBOX
        l.sendmail("s@x.test", ["bob+Nope@example.test"], msg("nope"))
        # refused recipients are not queued
        assert l.mail("s@x.test")[0] == 250
        assert l.rcpt("nobody@example.test")[0] == 550
        l.rset()
        l.quit()
        want = {b"APPEND\t0\talice\tINBOX", b"APPEND\t0\talice\tWork.2026",
                b"APPEND\t0\tbob\tINBOX"}
        wait_for(lambda: set(fake.lines()) >= want, 10, "the notices")
        time.sleep(0.3)
        got = fake.lines()
        assert set(got) == want | {b"VERSION\tindexer\t1\t0"}, got
        # every connection starts with the handshake; no pair twice
        # within one connection
        with fake.lock:
            for d in fake.conns:
                assert d.startswith(b"VERSION\tindexer\t1\t0\n"), d
                ls = d.split(b"\n")[1:-1]
                assert len(ls) == len(set(ls)), d
        assert len(b.bodies("alice")) == 5
        assert len(b.bodies("alice", "Work/2026")) == 2
        assert len(b.bodies("bob")) == 2

        # the indexer is gone: mail is still delivered, the folder waits
        fake.close()
        n = len(b.bodies("bob"))
        l = lmtp(b)
        for i in range(3):
            l.sendmail("s@x.test", ["bob@example.test"], msg(f"down {i}"))
        l.quit()
        assert len(b.bodies("bob")) == n + 3
        wait_for(lambda: "event=indexer.unreachable" in b.lmtpd_log(), 10,
                 "the unreachable warning")
        time.sleep(1.5)   # a retry or two: one warning for the streak
        assert b.lmtpd_log().count("event=indexer.unreachable") == 1
        # back: what waited goes at the next try (1 s, then 2 s ...)
        fake = FakeIndexer(isock)
        wait_for(lambda: len(fake.lines()) >= 2, 15, "the waiting folder")
        assert fake.lines() == [b"VERSION\tindexer\t1\t0",
                                b"APPEND\t0\tbob\tINBOX"]
        assert "event=indexer.reachable" in b.lmtpd_log()
    finally:
        fake.close()
        rc = b.stop()
    assert rc == 0
    # at the stop: every pair noted was sent, none dropped
    import re
    m = re.search(r"event=indexer\.stats noted=(\d+) sent=(\d+) "
                  r"dropped=(\d+) failures=(\d+) waiting=(\d+)",
                  b.lmtpd_log())
    assert m, b.lmtpd_log()[-2000:]
    noted, sent, dropped, failures, waiting = map(int, m.groups())
    assert noted == sent and noted >= 4 and dropped == 0 and waiting == 0
    assert failures >= 1
