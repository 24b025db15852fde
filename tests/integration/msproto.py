"""A small client of the mstore protocol (docs/protocol.md) for tests:
the ops the udsync, migration and feed tests read and write with (HELLO,
MBOX_LIST, MBOX_STATUS, APPEND, APPEND_UID, MBOX_UPDATE, FETCH_META,
FETCH_BODY, EXPUNGE, STATUS, CHANGES, COMPACT).  Not pipelined: one request, its
reply."""
import socket
import struct

HELLO, STATUS, MBOX_LIST, MBOX_CREATE, MBOX_STATUS = 1, 2, 20, 21, 25
APPEND, FETCH_META, FETCH_BODY, EXPUNGE, STORE = 30, 31, 32, 35, 34
MBOX_UPDATE, APPEND_UID = 55, 56
ESTATE = -10007
CHANGES, COMPACT = 33, 43
REPLY = 0x8000
MS_ESTATE = -10007


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<H", len(b)) + b


def _uids(ranges):
    return struct.pack("<I", len(ranges)) + b"".join(
        struct.pack("<II", lo, hi) for lo, hi in ranges)


class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.i)
        self.i += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def str(self):
        n = self.take("H")
        s = self.b[self.i:self.i + n]
        self.i += n
        return s.decode()

    def blob(self):
        n = self.take("I")
        s = self.b[self.i:self.i + n]
        self.i += n
        return s


class Error(Exception):
    def __init__(self, status, reason):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


class Client:
    def __init__(self, path, user=None, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(path))
        self.id = 0
        role = 0 if user else 1
        self.call(HELLO, struct.pack("<HB", 1, role) + _str(user or ""))

    def close(self):
        self.s.close()

    def _recv(self, n):
        out = b""
        while len(out) < n:
            d = self.s.recv(n - len(out))
            if not d:
                raise ConnectionError("mstored closed the connection")
            out += d
        return out

    def call(self, op, body=b""):
        self.id += 1
        self.s.sendall(struct.pack("<IHHI", 8 + len(body), op, 0, self.id)
                       + body)
        ln, rop, _, rid = struct.unpack("<IHHI", self._recv(12))
        rb = self._recv(ln - 8)
        r = Reader(rb)
        if rop == REPLY and rid == 0:
            # about the connection itself (refused, malformed): it closes
            status = r.take("i")
            raise Error(status, r.str())
        assert rop == op | REPLY and rid == self.id, (rop, rid)
        status = r.take("i")
        if status < 0:
            raise Error(status, r.str())
        return r

    def stats(self):
        r = self.call(STATUS)
        return {r.str(): r.take("Q") for _ in range(r.take("H"))}

    def mbox_list(self):
        """The names of the session user's mailboxes (MBOX_LIST)."""
        r = self.call(MBOX_LIST)
        out = []
        for _ in range(r.take("I")):
            r.take("Q")
            out.append(r.str())
            r.take("IIQIIQIB")
        return out

    def mbox_create(self, name, special_use=0):
        self.call(MBOX_CREATE, _str(name) + struct.pack("<I", special_use))

    def mbox_status(self, name):
        r = self.call(MBOX_STATUS, _str(name))
        mid = r.take("Q")
        nm = r.str()
        uidvalidity, uidnext = r.take("II")
        hms = r.take("Q")
        messages, unseen = r.take("II")
        return {"id": mid, "name": nm, "uidvalidity": uidvalidity,
                "uidnext": uidnext, "highestmodseq": hms,
                "messages": messages, "unseen": unseen,
                "bytes": r.take("Q")}

    def append(self, body, mailbox="INBOX", user="", keywords=()):
        kw = struct.pack("<H", len(keywords)) + b"".join(
            _str(k) for k in keywords)
        r = self.call(APPEND, struct.pack("<I", len(body)) + body +
                      struct.pack("<H", 1) + _str(user) + _str(mailbox) +
                      struct.pack("<Iq", 0, 0) + kw)
        assert r.take("H") == 1
        st = r.take("i")
        if st < 0:
            raise Error(st, r.str())
        mid = r.take("Q")
        uidvalidity, uid = r.take("II")
        return uid

    def append_uid(self, body, mailbox, uid, guid=bytes(16), user=""):
        """APPEND_UID: one placement at uid (0: the store picks) with
        guid; the placed uid, or Error with the placement's status."""
        r = self.call(APPEND_UID, struct.pack("<I", len(body)) + body +
                      struct.pack("<H", 1) + _str(user) + _str(mailbox) +
                      struct.pack("<IqH", 0, 0, 0) +
                      struct.pack("<I", uid) + guid)
        assert r.take("H") == 1
        st = r.take("i")
        if st < 0:
            raise Error(st, r.str())
        r.take("Q")
        uidvalidity, uid = r.take("II")
        return uid

    def mbox_update(self, name, uidvalidity=0, uidnext=0,
                    highestmodseq=0, guid=bytes(16)):
        """MBOX_UPDATE; the mailbox's state after it."""
        r = self.call(MBOX_UPDATE, _str(name) +
                      struct.pack("<IIQ", uidvalidity, uidnext,
                                  highestmodseq) + guid)
        mid = r.take("Q")
        nm = r.str()
        uv, un = r.take("II")
        hms = r.take("Q")
        messages, unseen = r.take("II")
        r.take("Q")
        r.take("I")
        r.take("B")
        g = r.b[r.i:r.i + 16]
        return {"id": mid, "name": nm, "uidvalidity": uv, "uidnext": un,
                "highestmodseq": hms, "messages": messages, "guid": g}

    def fetch_meta(self, mailbox, ranges=((1, 0xffffffff),)):
        r = self.call(FETCH_META, _str(mailbox) + _uids(list(ranges)))
        out = []
        for _ in range(r.take("I")):
            uid = r.take("I")
            modseq = r.take("Q")
            flags = r.take("I")
            kws = [r.str() for _ in range(r.take("H"))]
            received, saved = r.take("qq")
            guid = r.b[r.i:r.i + 16]
            r.i += 16
            psize, vsize = r.take("QQ")
            out.append({"uid": uid, "flags": flags, "keywords": kws,
                        "size": psize, "guid": guid})
        return out

    def fetch_body(self, mailbox, uid):
        data, off = b"", 0
        while True:
            r = self.call(FETCH_BODY, _str(mailbox) +
                          struct.pack("<IQI", uid, off, 0))
            total = r.take("Q")
            chunk = r.blob()
            data += chunk
            off += len(chunk)
            if off >= total or not chunk:
                return data

    def store(self, mailbox, ranges, mode, flags, keywords=(),
              unchangedsince=0):
        """STORE (mode 0 add, 1 remove, 2 replace): the modseq."""
        r = self.call(STORE, _str(mailbox) + _uids(list(ranges)) +
                      struct.pack("<BIH", mode, flags, len(keywords)) +
                      b"".join(_str(k) for k in keywords) +
                      struct.pack("<Q", unchangedsince))
        return r.take("Q")

    def expunge(self, mailbox, ranges):
        r = self.call(EXPUNGE, _str(mailbox) + _uids(list(ranges)))
        return r.take("Q")

    def changes(self, mailbox, since):
        """CHANGES: (highestmodseq, [(uid, modseq, flags)], expunged
        ranges); Error with MS_ESTATE when the feed cannot reach back."""
        r = self.call(CHANGES, _str(mailbox) + struct.pack("<Q", since))
        hms, _uidvalidity = r.take("QI")
        changed = []
        for _ in range(r.take("I")):
            uid, modseq, flags = r.take("IQI")
            for _ in range(r.take("H")):
                r.str()
            changed.append((uid, modseq, flags))
        gone = [r.take("II") for _ in range(r.take("I"))]
        return hms, changed, gone

    def compact(self, threshold=0, purge_only=False):
        """COMPACT (admin): the reply's counters."""
        r = self.call(COMPACT, struct.pack("<IB", threshold,
                                           1 if purge_only else 0))
        return {r.str(): r.take("Q") for _ in range(r.take("H"))}
