"""[store] log = syslog (docs/logging.md): mstored's lines reach syslog's
socket as logfmt without ts/prog/pid (syslog adds them), nothing of them
goes to stderr.  The machine has no syslog daemon: the test runs mstored in a
private mount namespace whose /dev is a directory of its own holding a
datagram socket named log (bound here) and the host's null, zero,
random and urandom."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import prog

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare (a private /dev/log)")

LINE = re.compile(r'^<(\d+)>.*?mstored\[\d+\]: (level=\S+ event=\S+.*)$')
FIELD = re.compile(r'[A-Za-z0-9_.-]+=(?:"(?:[^"\\]|\\["\\])*"|[^ "=\\]+)')


def logfmt_ok(text):
    pos = 0
    for m in FIELD.finditer(text):
        if m.start() != pos:
            return False
        pos = m.end() + 1
    return pos == len(text) + 1


def test_syslog(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for n in ("null", "zero", "random", "urandom"):
        (dev / n).touch()
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(dev / "log"))
    rx.settimeout(0.2)
    conf = tmp_path / "mstore.conf"
    conf.write_text("[store]\nprimary = p\nsecondary = s\n"
                    "socket = m.sock\nadmin_socket = a.sock\n"
                    "io_engine = psync\ncompact_interval = 0\n"
                    "log = syslog\n")
    binds = "; ".join(f"mount --bind /dev/{n} {dev}/{n}"
                      for n in ("null", "zero", "random", "urandom"))
    script = (f"set -e; mount --make-rprivate /; {binds}; "
              f"mount --bind {dev} /dev; exec {prog('mstored')} -c {conf}")
    err = open(tmp_path / "stderr", "wb")
    p = subprocess.Popen(["unshare", "-m", "sh", "-c", script],
                         stderr=err, stdout=err)
    lines = []
    try:
        end = time.time() + 20
        while time.time() < end and not any("event=ready " in l
                                            for l in lines):
            assert p.poll() is None, (tmp_path / "stderr").read_text()
            try:
                lines.append(rx.recv(65536).decode())
            except socket.timeout:
                pass
        assert any("event=ready " in l for l in lines), lines
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        end = time.time() + 2
        while time.time() < end:
            try:
                lines.append(rx.recv(65536).decode())
            except socket.timeout:
                break
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
        rx.close()
        err.close()
    assert any("event=stopped" in l for l in lines), lines
    for l in lines:
        m = LINE.match(l)
        assert m, l
        prio, text = int(m.group(1)), m.group(2)
        assert prio >> 3 == 2, l            # facility mail
        assert not text.startswith("ts="), l
        assert logfmt_ok(text), l
    # none of it on stderr
    assert "event=" not in (tmp_path / "stderr").read_text()
