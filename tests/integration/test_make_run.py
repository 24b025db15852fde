"""`make run`'s script starts the backend that exists (today: mstored)
with data in a var directory, creates the demo user, delivers a message
through the daemon, and `make stop` leaves no process behind.  Run
against a scratch var."""
import os
import re
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
        conf = str(var / "mstore.conf")
        stats = subprocess.run([prog("mstore"), "-c", conf, "stats"],
                               capture_output=True, text=True, check=True)
        counters = dict(l.split() for l in stats.stdout.splitlines())
        assert counters["index.users"] == "1"
        assert counters["index.messages"] == "1"
        assert counters["log.degraded"] == "0"
        # a second start finds it running and delivers again
        r2 = run_sh("start", var=var)
        assert r2.returncode == 0, r2.stderr
        assert "already running" in r2.stdout
        assert "uid 2 " in r2.stdout
        # offline writers are refused while mstored holds the store
        a = subprocess.run([prog("mstore"), "-c", conf, "append",
                            str(var / "demo.eml")],
                           capture_output=True, text=True)
        assert a.returncode == 2 and "in use" in a.stderr
    finally:
        s = run_sh("stop", var=var)
    assert s.returncode == 0, s.stderr
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    v = subprocess.run([prog("mstore"), "-c", conf, "verify"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
