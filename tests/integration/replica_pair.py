"""A primary store with its mstored and udsync send, and a DR store with
udsync recv, on one machine (udsync over 127.0.0.1), for the udsync
tests.  Every process is started here and ended by its pid."""
import os
import random
import signal
import socket
import subprocess
import threading
import time

from conftest import free_port, prog, run


def keygen(path):
    return run(prog("udsync"), "keygen", path, check=0).stdout.strip()


class Pair:
    def __init__(self, tmp, extra_store="", seg="1M"):
        self.tmp = tmp
        self.port = free_port()
        self.dr_port = self.port  # where send connects (a proxy may sit)
        p, d = tmp / "pri", tmp / "dr"
        p.mkdir()
        d.mkdir()
        self.pri, self.dr = p, d
        self.pub_p = keygen(p / "udsync.key")
        self.pub_d = keygen(d / "udsync.key")
        self.extra_store = extra_store
        self.seg = seg
        self.write_confs()
        self.procs = {}
        self.logs = {}

    def write_confs(self, dr_peer=None, pri_peer=None):
        p, d = self.pri, self.dr
        (p / "mstore.conf").write_text(
            "[store]\nprimary = a\nsecondary = b\n"
            f"segment_size = {self.seg}\nio_engine = psync\n"
            "compact_interval = 0\ncompress = no\n" + self.extra_store +
            "\n[udsync]\nkey_file = udsync.key\n"
            f"peer_key = {pri_peer or self.pub_d}\n"
            f"connect = 127.0.0.1:{self.dr_port}\n"
            "reconnect_delay = 200ms\ntimeout = 5s\n")
        (d / "mstore.conf").write_text(
            "[store]\nprimary = a\nsecondary = b\n"
            f"segment_size = {self.seg}\nio_engine = psync\n"
            "compact_interval = 0\n"
            "\n[udsync]\nkey_file = udsync.key\n"
            f"peer_key = {dr_peer or self.pub_p}\n"
            f"listen = 127.0.0.1:{self.port}\ntimeout = 5s\n")

    def start(self, name):
        cmd = {
            "mstored": [prog("mstored"), "-c", self.pri / "mstore.conf"],
            "send": [prog("udsync"), "-c", self.pri / "mstore.conf", "send"],
            "recv": [prog("udsync"), "-c", self.dr / "mstore.conf", "recv"],
            "standby": [prog("mstored"), "-c", self.dr / "mstore.conf",
                        "--standby"],
        }[name]
        log = open(self.tmp / f"{name}.log", "ab")
        self.logs[name] = self.tmp / f"{name}.log"
        self.procs[name] = subprocess.Popen([str(c) for c in cmd],
                                            stdout=log, stderr=log)
        if name in ("mstored", "standby"):
            d = self.pri if name == "mstored" else self.dr
            sock = d / "mstored-admin.sock"
            for _ in range(200):
                if sock.exists() and self.mstore(
                        "stats", conf=d / "mstore.conf").returncode == 0:
                    return
                time.sleep(0.05)
            raise AssertionError(f"{name} did not start: " +
                                 self.log(name))

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.pop(name, None)
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=30)

    def stop_all(self):
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM if name in ("mstored", "standby")
                      else signal.SIGKILL)

    def log(self, name):
        try:
            return self.logs[name].read_text(errors="replace")
        except (KeyError, OSError):
            return ""

    def mstore(self, *args, conf=None):
        return run(prog("mstore"), "-c", conf or (self.pri / "mstore.conf"),
                   *args)

    def stats(self):
        r = self.mstore("stats")
        assert r.returncode == 0, r.stderr
        return {k: int(v) for k, v in
                (l.split() for l in r.stdout.splitlines())}

    def deliver(self, n, user="u1", size=800, seed=0):
        rnd = random.Random(seed)
        msg = self.tmp / f"m{seed}.eml"
        ok = 0
        for i in range(n):
            body = (f"Subject: {seed}-{i}\r\n\r\n" +
                    "".join(rnd.choice("abcdefgh ") for _ in range(size))
                    + "\r\n").encode()
            msg.write_bytes(body)
            r = self.mstore("deliver", user, "INBOX", msg)
            if r.returncode == 0:
                ok += 1
        return ok

    def wait_caught_up(self, timeout=60):
        end = time.time() + timeout
        st = None
        while time.time() < end:
            st = self.stats()
            if (st.get("repl.lag_records", 1) == 0 and
                    st.get("repl.connected") == 1):
                return st
            time.sleep(0.1)
        raise AssertionError(f"DR did not catch up: {st}\nsend:\n"
                             f"{self.log('send')[-3000:]}\nrecv:\n"
                             f"{self.log('recv')[-3000:]}")

    def wait_identical(self, timeout=120):
        """Caught up (as mstored sees it) and byte-identical; the acks
        mstored holds may be older than a restart, so verify until the
        DR store has the same bytes."""
        self.wait_caught_up(timeout=timeout)
        end = time.time() + timeout
        while True:
            r = self.verify_against()
            if r.returncode == 0 or time.time() > end:
                return r
            time.sleep(0.2)

    def verify_against(self):
        # the primary's durable state against the DR copy, byte for byte
        return run(prog("mstore"), "verify", self.pri / "a", "--secondary",
                   self.pri / "b", "--no-index", "--against", self.dr / "a")


def plain_mstored_refused(conf):
    """Start mstored without --standby; it must exit at once (ended
    here by its pid if not).  Its output."""
    p = subprocess.Popen([str(prog("mstored")), "-c", str(conf)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("mstored started on a DR replica: " + out)
    assert p.returncode != 0, out
    return out


class BitFlipProxy:
    """TCP proxy between send and recv; flips one bit of the stream
    (sender to receiver) after `after` bytes when armed, or cuts the
    link when told."""

    def __init__(self, target_port):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.flip_at = None
        self.flips = 0
        # the next connection's forward frame of this number goes twice
        # (set before the cut that makes the sender reconnect: a
        # connection learns it as it is made, and counts its frames from
        # its first byte)
        self.replay_next = None
        self.replays = 0
        self.conns = []
        self.stop = False
        self.block = False
        # forward only this many bytes of the next connection, then cut
        # the link and refuse new ones (block) until told
        self.cut_after = None
        self.cuts = 0
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while not self.stop:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if self.block:
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            self.conns.append((c, u))
            replay, self.replay_next = self.replay_next, None
            threading.Thread(target=self.pump, args=(c, u, True, replay),
                             daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, False),
                             daemon=True).start()

    def pump(self, a, b, forward, replay=None):
        seen = 0
        # frames after the 105-byte hello and the 24-byte stream header
        fbuf, fno, hs = b"", 0, 129
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if forward and replay is not None:
                    fbuf += data
                    out = b""
                    if hs:
                        k = min(hs, len(fbuf))
                        out, fbuf, hs = fbuf[:k], fbuf[k:], hs - k
                    while len(fbuf) >= 4:
                        n = int.from_bytes(fbuf[:4], "little")
                        if len(fbuf) < 4 + n:
                            break
                        frame, fbuf = fbuf[:4 + n], fbuf[4 + n:]
                        fno += 1
                        out += frame
                        if fno == replay:
                            out += frame
                            self.replays += 1
                            replay = None
                    data = out
                    if replay is None:
                        data += fbuf
                        fbuf = b""
                    if not data:
                        continue
                if forward and self.flip_at is not None and \
                        seen + len(data) > self.flip_at:
                    i = self.flip_at - seen
                    data = bytearray(data)
                    data[i] ^= 0x10
                    data = bytes(data)
                    self.flip_at = None
                    self.flips += 1
                if forward and self.cut_after is not None and \
                        seen + len(data) >= self.cut_after:
                    b.sendall(data[:self.cut_after - seen])
                    self.cut_after = None
                    self.block = True
                    self.cuts += 1
                    break
                seen += len(data)
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        for c, u in self.conns:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
        self.conns = []

    def close(self):
        self.stop = True
        self.cut()
        self.ls.close()
