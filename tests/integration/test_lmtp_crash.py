"""kill -9 of mstored while LMTP deliveries are in flight: every message
that got 250 (per recipient) is in the store after mstored restarts;
the others got a 4xx or a dropped connection, never a 250 for
something that is not there.  mstore-lmtpd itself keeps running and
reconnects each time."""

import re
import signal
import smtplib
import threading
import time

from lmtp_env import Backend, wait_for

USERS = ["k0", "k1", "k2"]
ROUNDS = 3


def test_kill9_mstored_during_deliveries(tmp_path):
    be = Backend(str(tmp_path / "crash"), unix_socket=False).start()
    try:
        check_kill9(be)
    except BaseException:
        be.kill_all()
        raise
    assert be.stop() == 0


def check_kill9(be):
    for u in USERS:
        be.user_add(u)
    acked = []        # (message id, user) that got 250
    other = {"4xx": 0, "5xx": 0, "dropped": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def worker(w):
        conn, i = None, 0
        while not stop.is_set():
            i += 1
            mid = f"w{w}.{i}"
            rcpts = [USERS[w % 3], USERS[(w + 1) % 3]]
            m = (f"Message-ID: <{mid}@crash.test>\r\nSubject: {mid}\r\n\r\n"
                 .encode() + b"payload " * 500 + b"\r\n")
            try:
                if conn is None:
                    conn = smtplib.LMTP("127.0.0.1", be.port, timeout=30)
                    conn.ehlo("crash")
                conn.mail("s@x.test")
                ok = [u for u in rcpts
                      if conn.rcpt(f"{u}@example.test")[0] == 250]
                if not ok:
                    conn.rset()
                    with lock:
                        other["4xx"] += 1
                    time.sleep(0.01)
                    continue
                codes = [conn.data(m)[0]]
                codes += [conn.getreply()[0] for _ in ok[1:]]
                with lock:
                    for u, c in zip(ok, codes):
                        if c == 250:
                            acked.append((mid, u))
                        else:
                            other["4xx" if c < 500 else "5xx"] += 1
            except (smtplib.SMTPException, OSError):
                with lock:
                    other["dropped"] += 1
                conn = None

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    def connects():
        return be.lmtpd_log().count("event=store.connected")

    try:
        for rnd in range(ROUNDS):
            time.sleep(0.6)  # deliveries flowing
            be.mstored.send_signal(signal.SIGKILL)
            be.mstored.wait(10)
            time.sleep(0.3)
            be.start_mstored()
            # mstore-lmtpd finds it again (it retries with a backoff)
            wait_for(lambda: connects() >= rnd + 2, 15, "a reconnect")
        time.sleep(0.6)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    # every 250 is in the store, once mstored recovered
    stored = set()
    for u in USERS:
        for body in be.bodies(u):
            found = re.search(rb"Message-ID: <([^@>]+)@crash\.test>", body)
            assert found, body[:200]
            stored.add((found.group(1).decode(), u))
    missing = [a for a in acked if a not in stored]
    assert not missing, f"acknowledged but not stored: {missing[:10]}"
    assert len(acked) > 0
    assert other["5xx"] == 0, other
    # mstore-lmtpd lived through it
    assert be.lmtpd.poll() is None
    print(f"acked {len(acked)} placements, others {other}")
