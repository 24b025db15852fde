"""The plugin against a fake mstored that answers with malformed or
inconsistent replies: Dovecot must log errors and refuse the commands,
never crash (no Panic, no signal, no Fatal) and never corrupt its index
(no "Corrupted")."""
import imaplib
import os
import socket
import struct
import threading

import pytest

from dovecot_stack import Stack
from conftest import BUILD, _plugin_skip_reason

REPLY = 0x8000


def pstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<H", len(b)) + b


def mbox_info(name, uidv=7, uidnext=4, hms=10, messages=3):
    return (struct.pack("<Q", 1) + pstr(name) +
            struct.pack("<IIQIIQIB", uidv, uidnext, hms, messages, 0, 0, 0,
                        0))


def change(uid, modseq, kws=()):
    return (struct.pack("<IQIH", uid, modseq, 0, len(kws)) +
            b"".join(pstr(k) for k in kws))


def meta(uid, kws=()):
    return (struct.pack("<IQIH", uid, uid, 0, len(kws)) +
            b"".join(pstr(k) for k in kws) +
            struct.pack("<qq", 1700000000, 1700000000) + bytes(range(16)) +
            struct.pack("<QQ", 20, 20))


class FakeStore:
    """Answers HELLO, MBOX_LIST, MBOX_STATUS, CHANGES, FETCH_META,
    FETCH_BODY, STORE and EXPUNGE; `mode` makes one of them wrong."""

    def __init__(self, path, mode):
        self.path, self.mode = path, mode
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.stop = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,),
                             daemon=True).start()

    def body_for(self, op, req):
        m = self.mode
        ok = struct.pack("<i", 0)
        if op == 1:
            return ok + struct.pack("<HQ", 1, 42) + pstr("fake")
        if op == 20:
            if m == "huge_count":
                return ok + struct.pack("<I", 0xFFFFFFFF) + b"x"
            return ok + struct.pack("<I", 1) + mbox_info("INBOX")
        if op == 21:   # MBOX_CREATE: INBOX exists
            return struct.pack("<i", -17) + pstr("exists")
        if op == 25:
            if m == "garbage":
                return ok + os.urandom(13)
            return ok + mbox_info("INBOX")
        if op == 33:
            if m == "garbage":
                return ok + b"\x01\x02"
            if m == "bad_uidvalidity":
                return ok + struct.pack("<QII", 10, 0, 0) + struct.pack(
                    "<I", 0)
            chs = [change(3, 9), change(1, 5), change(2, 7)]
            if m == "duplicate":
                chs.append(change(2, 8))
            if m == "bad_keyword":
                chs = [change(1, 5, ["ok", "bad word", "x(y"])]
            return (ok + struct.pack("<QII", 10, 7, len(chs)) +
                    b"".join(chs) + struct.pack("<I", 0))
        if op == 31:
            uids = [1, 2, 3]
            if m == "descending":
                uids = [3, 2, 1]
            if m == "bad_keyword":
                return ok + struct.pack("<I", 1) + meta(1, ["ok",
                                                            "bad word"])
            return ok + struct.pack("<I", len(uids)) + b"".join(
                meta(u) for u in uids)
        if op == 32:
            if m == "short_body":
                return ok + struct.pack("<QI", 20, 0)
            return ok + struct.pack("<QI", 20, 20) + b"Subject: x\r\n\r\nabcdef"
        if op == 34:
            return ok + struct.pack("<QI", 11, 0)
        if op == 35:
            return ok + struct.pack("<QI", 11, 0)
        return struct.pack("<i", -95) + pstr("unknown")

    def serve(self, c):
        buf = b""
        try:
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(
                        "<I", buf[:4])[0]:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                n = struct.unpack("<I", buf[:4])[0]
                op, _, rid = struct.unpack("<HHI", buf[4:12])
                req, buf = buf[12:4 + n], buf[4 + n:]
                if op == 42:   # WAIT: never answered
                    continue
                body = self.body_for(op, req)
                c.sendall(struct.pack("<IHHI", 8 + len(body), op | REPLY, 0,
                                      rid) + body)
        except OSError:
            pass
        finally:
            c.close()


@pytest.mark.parametrize("mode", ["garbage", "huge_count", "descending",
                                  "duplicate", "bad_keyword",
                                  "bad_uidvalidity", "short_body"])
def test_malformed_replies(mode):
    reason = _plugin_skip_reason()
    if reason:
        pytest.skip(reason)
    import shutil
    import tempfile
    root = tempfile.mkdtemp(prefix="mstore-dovecot-")
    s = Stack(root, BUILD)
    fake = None
    try:
        # a Dovecot only, its socket served by the fake store
        s.start_mstored = lambda: None
        s.mstore = lambda *a, **k: None
        s.start()
        fake = FakeStore(s.p("mstored.sock"), mode)
        c = s.imap()
        try:
            typ, _ = c.select("INBOX")
            if typ == "OK":
                c.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE)")
                c.uid("FETCH", "1", "(BODY.PEEK[])")
                c.uid("STORE", "1", "+FLAGS", r"(\Seen)")
                c.noop()
            c.logout()
        except imaplib.IMAP4.abort:
            pass   # Dovecot hangs up after a failed body read: fine
        bad = [l for l in open(s.dlog, errors="replace").read().splitlines()
               if "Panic" in l or "Fatal" in l or "signal" in l or
               "Corrupted" in l or "corrupted" in l]
        assert not bad, "\n".join(bad)
    finally:
        if fake is not None:
            fake.stop = True
            fake.sock.close()
        s.stop()
        shutil.rmtree(root, ignore_errors=True)
