"""Thousands of idle LMTP sessions cost little memory, and a slow client
(one that trickles its message and never reads) stalls nobody: a
delivery on another session goes through at once meanwhile."""

import resource
import smtplib
import socket
import time

import pytest

from lmtp_env import Backend

IDLE = 3000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def be(tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE + 200), hard))
    b = Backend(str(tmp_path_factory.mktemp("lmtp-idle")),
                f"max_sessions = {IDLE + 100}\n"
                f"max_sessions_per_client = 0\n").start()
    try:
        b.user_add("ivan")
        yield b
    except BaseException:
        b.kill_all()
        raise
    assert b.stop() == 0


def deliver_quickly(be, subject):
    t0 = time.monotonic()
    l = smtplib.LMTP("127.0.0.1", be.port, timeout=10)
    l.ehlo("gw.example.test")
    msg = f"Subject: {subject}\r\n\r\nhello\r\n".encode()
    assert l.sendmail("g@example.test", ["ivan@example.test"], msg) == {}
    l.quit()
    return time.monotonic() - t0


def test_idle_sessions_and_slow_client(be):
    pid = be.lmtpd.pid
    deliver_quickly(be, "warm-up")
    base = rss_kib(pid)
    socks = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", be.port), timeout=10)
            socks.append(s)
        # every session got its greeting and then sits there
        for s in socks[:: IDLE // 20]:
            assert s.recv(512).startswith(b"220 ")
        time.sleep(0.5)
        grown = rss_kib(pid) - base
        print(f"lmtpd RSS: {base} KiB, +{grown} KiB with {IDLE} idle sessions")
        # a few hundred bytes of state per idle session, not buffers
        assert grown < IDLE * 2, f"RSS grew {grown} KiB for {IDLE} sessions"

        # a slow client: a message trickled a byte at a time, replies
        # never read, while others deliver
        slow = socket.create_connection(("127.0.0.1", be.port), timeout=10)
        slow.recv(512)
        slow.sendall(b"LHLO slow\r\nMAIL FROM:<s@example.test>\r\n"
                     b"RCPT TO:<ivan@example.test>\r\nDATA\r\n")
        for ch in b"Subject: slow\r\n\r\nbody":
            slow.send(bytes([ch]))
            took = deliver_quickly(be, "meanwhile")
            assert took < 2.0, f"a delivery took {took:.2f} s"
        slow.close()
        assert deliver_quickly(be, "after") < 2.0
    finally:
        for s in socks:
            s.close()
