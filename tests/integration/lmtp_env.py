"""A private mstored + mstore-lmtpd pair for the LMTP tests, on free
127.0.0.1 ports, and a small client of the mstore protocol (HELLO,
MBOX_CREATE, MBOX_STATUS, FETCH_BODY, STATUS) to read back what was
stored.  Not a test module: the test_lmtp*.py files use it."""

import os
import signal
import socket
import struct
import subprocess
import time

from conftest import free_port, prog, run

OP_HELLO, OP_STATUS = 1, 2
OP_MBOX_CREATE, OP_MBOX_STATUS = 21, 25
OP_FETCH_BODY = 32
MS_ENOTFOUND = -10012


def wait_for(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class ProtoError(Exception):
    def __init__(self, status, reason):
        super().__init__(f"{status}: {reason}")
        self.status = status


def _str(b):
    return struct.pack("<H", len(b)) + b


class MsClient:
    """Blocking mstore protocol client (docs/protocol.md)."""

    def __init__(self, path, user=None):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(path)
        self.id = 0
        body = struct.pack("<HB", 1, 0 if user else 1)
        body += _str(user.encode() if user else b"")
        self.call(OP_HELLO, body)

    def close(self):
        self.s.close()

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("mstored closed the connection")
            buf += chunk
        return buf

    def call(self, op, body):
        self.id += 1
        self.s.sendall(struct.pack("<IHHI", 8 + len(body), op, 0, self.id)
                       + body)
        ln, rop, _flags, rid = struct.unpack("<IHHI", self._recv(12))
        rb = self._recv(ln - 8)
        assert rid == self.id and rop == op | 0x8000
        status = struct.unpack_from("<i", rb)[0]
        if status < 0:
            n = struct.unpack_from("<H", rb, 4)[0]
            raise ProtoError(status, rb[6:6 + n].decode(errors="replace"))
        return rb[4:]

    def mbox_create(self, name):
        self.call(OP_MBOX_CREATE, _str(name.encode()) + struct.pack("<I", 0))

    def mbox_status(self, name):
        r = self.call(OP_MBOX_STATUS, _str(name.encode()))
        n = struct.unpack_from("<H", r, 8)[0]
        off = 10 + n
        _uv, uidnext = struct.unpack_from("<II", r, off)
        _hms, messages = struct.unpack_from("<QI", r, off + 8)
        return {"uidnext": uidnext, "messages": messages}

    def fetch_body(self, mbox, uid):
        out, offset = b"", 0
        while True:
            r = self.call(OP_FETCH_BODY, _str(mbox.encode()) +
                          struct.pack("<IQI", uid, offset, 0))
            total, ln = struct.unpack_from("<QI", r)
            out += r[12:12 + ln]
            offset += ln
            if offset >= total or ln == 0:
                return out

    def bodies(self, mbox="INBOX"):
        """Every message of the mailbox, in UID order."""
        res = []
        for uid in range(1, self.mbox_status(mbox)["uidnext"]):
            try:
                res.append(self.fetch_body(mbox, uid))
            except ProtoError as e:
                if e.status != MS_ENOTFOUND:
                    raise
        return res

    def counters(self):
        r = self.call(OP_STATUS, b"")
        n = struct.unpack_from("<H", r)[0]
        off, out = 2, {}
        for _ in range(n):
            kl = struct.unpack_from("<H", r, off)[0]
            key = r[off + 2:off + 2 + kl].decode()
            out[key] = struct.unpack_from("<Q", r, off + 2 + kl)[0]
            off += 2 + kl + 8
        return out


def split_headers(msg):
    """(the header lines mstore-lmtpd added, the rest) of a stored body.
    Added lines: Return-Path, Delivered-To, and our Received with its
    continuation lines."""
    lines = msg.split(b"\r\n")
    i, added = 0, []
    while i < len(lines):
        ln = lines[i]
        if ln.startswith((b"Return-Path:", b"Delivered-To:")):
            added.append(ln)
            i += 1
        elif ln.startswith(b"Received:") and i + 1 < len(lines) and \
                b"(mstore-lmtpd)" in b"".join(
                    lines[i:i + 3]):
            added.append(ln)
            i += 1
            while i < len(lines) and lines[i][:1] in (b"\t", b" "):
                added.append(lines[i])
                i += 1
            break
        else:
            break
    return added, b"\r\n".join(lines[i:])


class Backend:
    """mstored and mstore-lmtpd in a scratch directory."""

    def __init__(self, root, lmtp_extra="", unix_socket=True):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(root, "mstore.conf")
        self.asock = os.path.join(root, "mstored-admin.sock")
        self.lsock = os.path.join(root, "lmtp.sock") if unix_socket else None
        with open(self.conf, "w") as f:
            f.write(f"""[store]
primary = {root}/primary
secondary = {root}/secondary
index = {root}/index
io_engine = {os.environ.get("MSTORE_IO_ENGINE", "uring")}
socket = {root}/mstored.sock
admin_socket = {self.asock}
scrub_rate = 0
[lmtp]
listen = 127.0.0.1:{self.port}
hostname = lmtp.example.test
domains = example.test, Other.Test
""")
            if self.lsock:
                f.write(f"socket = {self.lsock}\n")
            f.write(lmtp_extra)
        self.mstored = None
        self.lmtpd = None
        self.mslog = open(os.path.join(root, "mstored.log"), "ab")
        self.lmlog_path = os.path.join(root, "lmtpd.log")
        self.lmlog = open(self.lmlog_path, "ab")

    def start_mstored(self):
        self.mstored = subprocess.Popen([prog("mstored"), "-c", self.conf],
                                        stdout=self.mslog,
                                        stderr=subprocess.STDOUT)

        def up():
            if self.mstored.poll() is not None:
                raise AssertionError("mstored exited: see " + self.root)
            try:
                MsClient(self.asock).close()
                return True
            except OSError:
                return False
        wait_for(up, 30, "mstored")

    def start_lmtpd(self):
        self.lmtpd = subprocess.Popen([prog("mstore-lmtpd"), "-c",
                                       self.conf], stdout=self.lmlog,
                                      stderr=subprocess.STDOUT)

        def up():
            if self.lmtpd.poll() is not None:
                raise AssertionError("mstore-lmtpd exited: " +
                                     self.lmtpd_log())
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return True
            except OSError:
                return False
        wait_for(up, 10, "mstore-lmtpd")
        # and it has said hello to mstored
        wait_for(lambda: "event=store.connected" in self.lmtpd_log(), 10,
                 "mstore-lmtpd to connect to mstored")

    def start(self):
        """Both daemons; on failure neither is left running."""
        try:
            self.start_mstored()
            self.start_lmtpd()
        except BaseException:
            self.kill_all()
            raise
        return self

    def kill_all(self):
        """After a failure: whatever we started goes, by PID."""
        for p in (self.lmtpd, self.mstored):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
        self.lmtpd = self.mstored = None

    def lmtpd_log(self):
        with open(self.lmlog_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop_mstored(self, sig=signal.SIGTERM):
        if self.mstored and self.mstored.poll() is None:
            self.mstored.send_signal(sig)
            self.mstored.wait(30)
        rc = self.mstored.returncode if self.mstored else None
        self.mstored = None
        return rc

    def stop_lmtpd(self):
        if self.lmtpd and self.lmtpd.poll() is None:
            self.lmtpd.send_signal(signal.SIGTERM)
            self.lmtpd.wait(30)
        rc = self.lmtpd.returncode if self.lmtpd else None
        self.lmtpd = None
        return rc

    def stop(self):
        rc = self.stop_lmtpd()
        self.stop_mstored()
        self.mslog.close()
        self.lmlog.close()
        return rc

    def tool(self, *args, check=0):
        return run(prog("mstore"), "-c", self.conf, *args, check=check)

    def user_add(self, name):
        self.tool("user", "add", name)

    def quota(self, user, max_bytes, max_messages):
        self.tool("quota", user, str(max_bytes), str(max_messages))

    def client(self, user=None):
        """A user session on the user socket, or admin on the admin one
        (mstored serves mailbox ops only on the user socket)."""
        if user is None:
            return MsClient(self.asock)
        return MsClient(os.path.join(self.root, "mstored.sock"), user)

    def bodies(self, user, mbox="INBOX"):
        c = self.client(user)
        try:
            return c.bodies(mbox)
        finally:
            c.close()

    def body_records(self):
        """BODY records in the log (each stored body is one)."""
        out = self.tool("stats", "--offline").stdout
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            if k == "log.records.body":
                return int(v)
        return 0
