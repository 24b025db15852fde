"""Sharding users across two backends (docs/examples/dovecot-proxy.conf):
each backend a full mstore (mstored, mstore-lmtpd, a backend Dovecot
with the plugin), a Dovecot proxy in front whose passdb says `proxy`
and `host` (and here `port`, the backends being on one machine) for
each user.  IMAP logins through the proxy reach the user's backend, and
LMTP deliveries through Dovecot's LMTP proxy (lmtp_proxy = yes) reach
the user's backend's mstore-lmtpd and store; each backend's store is
checked directly (mstore export of the user on the other is empty)."""
import imaplib
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, _plugin_skip_reason, prog
from dovecot_stack import PASSWORD, Stack, free_port, wait_gone

SHARDS = {"a": ("alice", "carol"), "b": ("bob", "dave")}


def start_lmtpd(st):
    port = free_port()
    with open(st.conf, "a") as f:
        f.write(f"[lmtp]\nlisten = 127.0.0.1:{port}\n"
                "domains = example.test\n")
    log = open(st.p("lmtpd.log"), "ab")
    p = subprocess.Popen([prog("mstore-lmtpd"), "-c", st.conf],
                         stdout=log, stderr=log)
    end = time.time() + 20
    while time.time() < end:
        if "event=store.connected" in open(st.p("lmtpd.log"),
                                          errors="replace").read():
            return p, port
        assert p.poll() is None, open(st.p("lmtpd.log")).read()
        time.sleep(0.05)
    p.kill()
    raise AssertionError("mstore-lmtpd did not connect")


def write_proxy(root, backends):
    """The proxy's dovecot.conf: docs/examples/dovecot-proxy.conf's
    passdb (proxy=y host=...), with a port per service (%s-users)."""
    imap_port, lmtp_port = free_port(), free_port()
    with open(os.path.join(root, "imap-users"), "w") as f, \
            open(os.path.join(root, "lmtp-users"), "w") as g:
        for shard, users in SHARDS.items():
            st, lport = backends[shard]
            for u in users:
                f.write(f"{u}:{{PLAIN}}{PASSWORD}::::::proxy=y "
                        f"host=127.0.0.1 port={st.imap_port}\n")
                # LMTP looks up the whole address, and sends it on as
                # the passdb's user: keep the domain
                g.write(f"{u}@example.test:::::::proxy=y host=127.0.0.1 "
                        f"port={lport} protocol=lmtp\n")
    for d in ("run", "log", "state"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    conf = os.path.join(root, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = mstoreproxy{os.getpid()}_{imap_port}
listen = 127.0.0.1
protocols = imap lmtp
log_path = {root}/log/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
lmtp_proxy = yes
lmtp_save_to_detail_mailbox = no
# one file per service (%s): the backends' IMAP and LMTP ports differ
passdb {{
  driver = passwd-file
  args = {root}/%s-users
}}
userdb {{
  driver = static
  args = uid=mstoremail gid=mstoremail
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
""")
    return conf, imap_port, lmtp_port


def test_example_configs_parse():
    """docs/examples' Dovecot configs are valid for this Dovecot."""
    if shutil.which("doveconf") is None:
        pytest.skip("doveconf is not installed")
    from conftest import SRC
    ex = os.path.join(SRC, "docs", "examples")
    for name in ("dovecot-backend.conf", "dovecot-dr.conf",
                 "dovecot-proxy.conf"):
        r = subprocess.run(["doveconf", "-c", os.path.join(ex, name), "-n"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (name, r.stderr)
    r = subprocess.run(["doveconf", "-c", os.path.join(ex,
                        "dovecot-proxy.conf"), "-h", "lmtp_proxy"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "yes"


def test_users_sharded_behind_dovecot_proxy():
    reason = _plugin_skip_reason()
    if reason:
        pytest.skip(reason)
    top = tempfile.mkdtemp(prefix="mstore-shard-")
    os.chmod(top, 0o755)
    backends, stacks, lmtpds = {}, [], []
    proxy_pid = None
    ok = False
    try:
        for shard, users in SHARDS.items():
            d = os.path.join(top, shard)
            os.makedirs(d)
            st = Stack(d, BUILD, users=users)
            stacks.append(st)
            st.start()
            p, lport = start_lmtpd(st)
            lmtpds.append(p)
            backends[shard] = (st, lport)
        proot = os.path.join(top, "proxy")
        os.makedirs(proot)
        conf, imap_port, lmtp_port = write_proxy(proot, backends)
        # not a pipe: the daemon keeps its stderr open
        with open(os.path.join(proot, "log", "start.log"), "ab") as out:
            r = subprocess.run(["dovecot", "-c", conf], stdout=out,
                               stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        assert r.returncode == 0, open(
            os.path.join(proot, "log", "start.log")).read()
        pidfile = os.path.join(proot, "run", "master.pid")
        end = time.time() + 20
        while time.time() < end:
            try:
                proxy_pid = int(open(pidfile).read())
                socket.create_connection(("127.0.0.1", imap_port),
                                         timeout=1).close()
                break
            except (OSError, ValueError):
                time.sleep(0.05)

        # LMTP through Dovecot's LMTP proxy: one message per user, one
        # to two users on different backends
        lm = smtplib.LMTP("127.0.0.1", lmtp_port, timeout=60)
        lm.ehlo("gw.example.test")
        for shard, users in SHARDS.items():
            for u in users:
                msg = (f"Subject: for {u}\r\n\r\nbody of {u}\r\n").encode()
                assert lm.sendmail("s@example.test", [f"{u}@example.test"],
                                   msg) == {}
        assert lm.sendmail("s@example.test", ["alice@example.test",
                                              "bob@example.test"],
                           b"Subject: both\r\n\r\nto two shards\r\n") == {}
        lm.quit()

        # each backend's store has its users' mail and nothing else
        for shard, users in SHARDS.items():
            st, _ = backends[shard]
            listed = st.mstore("user", "list").stdout.decode()
            for u in users:
                assert f" {u}" in listed
            other = [u for s2, us in SHARDS.items() if s2 != shard
                     for u in us]
            for u in other:
                assert f" {u}\n" not in listed + "\n"
            for u in users:
                out = st.doveadm_fresh("fetch", "hdr.subject", "mailbox",
                                       "INBOX", "all", user=u)
                assert f"for {u}" in out, out
                assert ("both" in out) == (u in ("alice", "bob")), out
            # the deliveries went through this backend's mstore-lmtpd
            lg = open(st.p("lmtpd.log"), errors="replace").read()
            for u in users:
                assert f"user={u} " in lg, lg

        # IMAP through the proxy reaches the right backend
        for shard, users in SHARDS.items():
            for u in users:
                im = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
                im.login(u, PASSWORD)
                typ, data = im.select("INBOX")
                assert typ == "OK"
                n = int(data[0])
                assert n == (2 if u in ("alice", "bob") else 1)
                typ, data = im.fetch("1", "(BODY.PEEK[TEXT])")
                assert data[0][1] == f"body of {u}\r\n".encode()
                # a write lands in that backend's store
                typ, _ = im.append("INBOX", None, None,
                                   f"Subject: via proxy {u}\r\n\r\nx\r\n"
                                   .encode())
                assert typ == "OK"
                im.logout()
                st, _ = backends[shard]
                out = st.doveadm_fresh("fetch", "hdr.subject", "mailbox",
                                       "INBOX", "all", user=u)
                assert f"via proxy {u}" in out
        for st in stacks:
            assert not st.log_problems(), st.log_problems()
        ok = True
    finally:
        if proxy_pid is not None:
            try:
                os.kill(proxy_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_gone(proxy_pid)
        for p in lmtpds:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
        for st in stacks:
            st.stop()
        if ok or not os.environ.get("MSTORE_KEEP"):
            shutil.rmtree(top, ignore_errors=True)
        else:
            print(f"kept {top}")
