"""`make run`'s script starts the backend that exists (today: mstored
and mstore-lmtpd) with data in a var directory, creates the demo user,
delivers a message through the daemon, says where LMTP listens (and it
does), and `make stop` leaves no process behind.  Run against a scratch
var."""
import os
import re
import smtplib
import subprocess
import time

from conftest import prog, run_sh



def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes; pid 1 reaps it later
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_run_start_stop(tmp_path):
    var = tmp_path / "var"
    r = run_sh("start", var=var)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"delivered to demo/INBOX: uid 1 ", r.stdout)
        pid = int((var / "mstored.pid").read_text())
        assert alive(pid)
        lpid = int((var / "lmtpd.pid").read_text())
        assert alive(lpid)
        m = re.search(r"LMTP +127\.0\.0\.1:(\d+) and ", r.stdout)
        assert m, r.stdout
        lm = smtplib.LMTP("127.0.0.1", int(m.group(1)), timeout=30)
        lm.ehlo("test")
        assert lm.sendmail("t@example.test", ["demo@example.test"],
                           b"Subject: via LMTP\r\n\r\nhi\r\n") == {}
        lm.quit()
        conf = str(var / "mstore.conf")
        stats = subprocess.run([prog("mstore"), "-c", conf, "stats"],
                               capture_output=True, text=True, check=True)
        counters = dict(l.split() for l in stats.stdout.splitlines())
        assert counters["index.users"] == "1"
        assert counters["index.messages"] == "2"
        assert counters["log.degraded"] == "0"
        # a second start finds it running and delivers again
        r2 = run_sh("start", var=var)
        assert r2.returncode == 0, r2.stderr
        assert "already running" in r2.stdout
        assert "mstore-lmtpd is already running" in r2.stdout
        assert "uid 3 " in r2.stdout
        # offline writers are refused while mstored holds the store
        a = subprocess.run([prog("mstore"), "-c", conf, "append",
                            str(var / "demo.eml")],
                           capture_output=True, text=True)
        assert a.returncode == 2 and "in use" in a.stderr
    finally:
        s = run_sh("stop", var=var)
    assert s.returncode == 0, s.stderr
    deadline = time.time() + 10
    while (alive(pid) or alive(lpid)) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid) and not alive(lpid)
    v = subprocess.run([prog("mstore"), "-c", conf, "verify"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
