"""`make run`'s script starts what exists (today: the engine itself) with
data in a var directory, stores a message on both copies, verifies, and
`make stop` leaves nothing behind.  Run against a scratch var."""
import os
import re
import subprocess

from conftest import BUILD, prog

SRC = os.environ.get("MSTORE_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))


def run_sh(*args, var):
    env = dict(os.environ, MSTORE_VAR=str(var))
    return subprocess.run([os.path.join(SRC, "tests/lib/run.sh"), *args,
                           BUILD], capture_output=True, text=True,
                          env=env, timeout=120)


def test_run_start_stop(tmp_path):
    var = tmp_path / "var"
    r = run_sh("start", var=var)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: clean" in r.stdout
    pos = re.search(r"stored at (\d+:\d+)", r.stdout).group(1)
    conf = var / "mstore.conf"
    body = subprocess.run([prog("mstore"), "-c", str(conf), "cat", pos],
                          capture_output=True, check=True).stdout
    assert b"Subject: mstore demo" in body
    # a second start keeps the store and adds another message
    r2 = run_sh("start", var=var)
    assert r2.returncode == 0, r2.stderr
    dump = subprocess.run([prog("mstore"), "-c", str(conf), "dump"],
                          capture_output=True, text=True, check=True).stdout
    assert len(dump.splitlines()) == 2
    assert (var / "store" / "primary" / "mstore.meta").exists()
    assert (var / "store" / "secondary" / "mstore.meta").exists()
    s = run_sh("stop", var=var)
    assert s.returncode == 0
