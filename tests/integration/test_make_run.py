"""`make run`'s script starts the backend with data in a var directory:
mstored, mstore-lmtpd, the DR site (udsync send and recv, a standby
mstored) and, with Postfix installed, the MX gateway; it creates the
demo user and delivers a message.  A message sent by SMTP to the gateway
reaches the store and the DR site; `make stop` leaves no process behind.
Run against a scratch var."""
import imaplib
import os
import poplib
import pathlib
import shutil
import tempfile
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


def test_run_start_stop():
    # Postfix's own user must reach the queue: a searchable directory
    root = pathlib.Path(tempfile.mkdtemp(prefix="mstore-run-"))
    root.chmod(0o755)
    var = root / "var"
    try:
        run_and_check(var)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_and_check(var):
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
        pids = [pid, lpid]
        assert counters["log.degraded"] == "0"
        # SMTP to the gateway -> LMTP -> the store -> udsync -> the DR
        want = 2
        m = re.search(r"SMTP on 127\.0\.0\.1:(\d+) ", r.stdout)
        # as root with Postfix installed the gateway must be there
        if os.geteuid() == 0 and os.path.exists("/usr/sbin/postfix"):
            assert m, r.stdout
        if m:
            sm = smtplib.SMTP("127.0.0.1", int(m.group(1)), timeout=30)
            sm.ehlo("test")
            assert sm.sendmail("t@example.test", ["demo@example.test"],
                               b"Subject: via SMTP\r\n\r\nhi\r\n") == {}
            sm.quit()
            want = 3
        dr_conf = str(var / "dr" / "mstore.conf")

        def messages(c):
            out = subprocess.run([prog("mstore"), "-c", c, "stats"],
                                 capture_output=True, text=True).stdout
            return dict(l.split() for l in out.splitlines()).get(
                "index.messages")
        deadline = time.time() + 30
        while time.time() < deadline and (
                messages(conf) != str(want) or messages(dr_conf) != str(want)):
            time.sleep(0.2)
        assert messages(conf) == str(want)
        assert messages(dr_conf) == str(want)
        pids += [int((var / f).read_text()) for f in
                 ("udsync-send.pid", "udsync-recv.pid", "standby.pid")]
        # the user reads it over IMAP and POP3, through the plugin
        m = re.search(r"IMAP 127\.0\.0\.1:(\d+), POP3 127\.0\.0\.1:(\d+)",
                      r.stdout)
        # and Dovecot, when it and the plugin are there
        plugin = os.path.join(os.environ.get("MSTORE_BUILD", "build"),
                              "modules", "lib20_mstore_plugin.so")
        if (os.geteuid() == 0 and os.path.exists("/usr/sbin/dovecot")
                and os.path.exists(plugin)):
            assert m, r.stdout
        if m:
            im = imaplib.IMAP4("127.0.0.1", int(m.group(1)), timeout=30)
            im.login("demo", "demo")
            typ, data = im.select("INBOX")
            assert typ == "OK" and int(data[0]) == want
            typ, data = im.fetch(str(want), "(BODY.PEEK[TEXT])")
            assert typ == "OK"
            # the newest message (by SMTP, or by LMTP without Postfix)
            assert data[0][1] == b"hi\r\n"
            im.logout()
            po = poplib.POP3("127.0.0.1", int(m.group(2)), timeout=30)
            po.user("demo")
            po.pass_("demo")
            assert po.stat()[0] == want
            po.quit()
            pids.append(int((var / "dovecot" / "run" /
                             "master.pid").read_text()))
        # a second start finds it running and delivers again
        r2 = run_sh("start", var=var)
        assert r2.returncode == 0, r2.stderr
        assert "already running" in r2.stdout
        assert "mstore-lmtpd is already running" in r2.stdout
        assert f"uid {want + 1} " in r2.stdout
        # offline writers are refused while mstored holds the store
        a = subprocess.run([prog("mstore"), "-c", conf, "append",
                            str(var / "demo.eml")],
                           capture_output=True, text=True)
        assert a.returncode == 2 and "in use" in a.stderr
    finally:
        s = run_sh("stop", var=var)
    assert s.returncode == 0, s.stderr
    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
    # and no Postfix of ours is left
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True,
                        text=True).stdout
    assert str(var / "postfix") not in ps
    v = subprocess.run([prog("mstore"), "-c", conf, "verify"],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout
