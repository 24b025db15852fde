"""A real gateway: a private Postfix (TESTING-NOTES.md) whose smtpd
listens on 127.0.0.1:8025 (or a free port) and relays every message for
example.test to mstore-lmtpd over LMTP.  Messages sent to it by SMTP
land in the store byte for byte below the added header lines (ours and
Postfix's own Received); a message to two recipients is one LMTP
transaction and one stored body; Postfix's XFORWARD shows in our
Received line.  The private Postfix is stopped at the end."""

import os
import pwd
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile

import pytest

from lmtp_env import Backend, free_port, pid_gone, split_headers, wait_for

POSTFIX = "/usr/sbin/postfix"


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def write_postfix(root, smtp_port, lmtp_port):
    etc, spool, data = (os.path.join(root, d) for d in
                        ("etc", "spool", "data"))
    for d in (etc, spool, data):
        os.makedirs(d)
    os.chmod(root, 0o755)
    pw = pwd.getpwnam("postfix")
    os.chown(data, pw.pw_uid, pw.pw_gid)
    with open("/etc/postfix/master.cf") as f:
        master = f.read()
    lines = []
    for ln in master.splitlines():
        if re.match(r"^smtp\s+inet\s", ln):
            ln = f"127.0.0.1:{smtp_port} inet n - n - - smtpd"
        else:
            # no chroot: the private queue has none of its files
            ln = re.sub(r"^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)", r"\1n\2", ln)
        lines.append(ln)
    with open(os.path.join(etc, "master.cf"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(etc, "main.cf"), "w") as f:
        f.write(f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = gw.example.test
mydomain = gw.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = example.test
transport_maps = inline:{{ example.test=lmtp:inet:127.0.0.1:{lmtp_port} }}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
lmtp_send_xforward_command = yes
smtputf8_enable = no
biff = no
""")
    return etc


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    if not os.path.exists(POSTFIX):
        pytest.skip("postfix is not installed (./configure installs it)")
    root = str(tmp_path_factory.mktemp("gw"))
    be = Backend(os.path.join(root, "mstore"),
                 "trusted_gateways = 127.0.0.1\n").start()
    smtp_port = 8025 if port_free(8025) else free_port()
    # postfix's own processes run as "postfix": its directory must be
    # reachable by that user, which pytest's 0700 tmp_path is not
    pfroot = tempfile.mkdtemp(prefix="mstore-postfix-")
    etc = os.path.join(pfroot, "etc")
    pidfile = os.path.join(pfroot, "spool", "pid", "master.pid")
    ok = False
    try:
        for u in ("pf1", "pf2", "pf3"):
            be.user_add(u)
        etc = write_postfix(pfroot, smtp_port, be.port)
        r = subprocess.run([POSTFIX, "-c", etc, "start"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr + maillog(pfroot)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", smtp_port),
                                         timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, 30, "postfix smtpd")
        yield be, smtp_port, pfroot
        ok = True
    finally:
        pid = None
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                pid = int(f.read().split()[0])
            subprocess.run([POSTFIX, "-c", etc, "stop"],
                           capture_output=True, timeout=60)
        if pid:
            wait_for(lambda: pid_gone(pid), 30, "postfix master to exit")
        if ok:
            assert be.stop() == 0
        else:
            be.kill_all()
    shutil.rmtree(pfroot, ignore_errors=True)


def maillog(pfroot):
    try:
        with open(os.path.join(pfroot, "maillog"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def body_of(be, user, n, pfroot):
    wait_for(lambda: len(be.bodies(user)) >= n, 60,
             f"{user} to get {n} message(s); maillog:\n{maillog(pfroot)}")
    return be.bodies(user)[n - 1]


def check_below_headers(stored, original):
    """Ours, then Postfix's Received, then the message byte for byte."""
    added, rest = split_headers(stored)
    assert rest.startswith(b"Received: from client.example.test")
    cut = rest.index(b"\r\n") + 2
    while rest[cut:cut + 1] in (b"\t", b" "):
        cut = rest.index(b"\r\n", cut) + 2
    assert rest[cut:] == original
    return added


def test_postfix_relays_to_lmtp(gateway):
    be, port, pfroot = gateway
    one = (b"Date: Tue, 03 Jun 2025 10:00:00 +0000\r\n"
           b"Message-ID: <pf-one@client.example.test>\r\n"
           b"From: sender@client.test\r\nTo: pf1@example.test\r\n"
           b"Subject: through postfix\r\n\r\nfirst line\r\n"
           b".a line with a leading dot\r\n\r\n  indented\r\nlast\r\n")
    two = (b"Date: Tue, 03 Jun 2025 10:01:00 +0000\r\n"
           b"Message-ID: <pf-two@client.example.test>\r\n"
           b"From: sender@client.test\r\nTo: pf2@example.test, "
           b"pf3@example.test\r\nSubject: two recipients\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n"
           b"gr\xc3\xbc\xc3\x9fe\r\n" + (b"z" * 900 + b"\r\n") * 6)
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.test",
                     timeout=30)
    s.sendmail("sender@client.test", ["pf1@example.test"], one)
    s.sendmail("sender@client.test", ["pf2@example.test",
                                      "PF3@Example.Test"], two,
               mail_options=["BODY=8BITMIME"])
    s.quit()
    a1 = check_below_headers(body_of(be, "pf1", 1, pfroot), one)
    assert a1[0] == b"Return-Path: <sender@client.test>"
    assert a1[1] == b"Delivered-To: <pf1@example.test>"
    # Postfix told us who its client was (XFORWARD)
    assert b"Received: from client.example.test (" in a1[2]
    b2 = body_of(be, "pf2", 1, pfroot)
    b3 = body_of(be, "pf3", 1, pfroot)
    assert b2 == b3  # one transaction, one body
    a2 = check_below_headers(b2, two)
    assert not any(x.startswith(b"Delivered-To") for x in a2)
    log = maillog(pfroot)
    assert log.count("status=sent (250 2.0.0 Delivered") == 3, log
    # an unknown user is refused at RCPT time: Postfix bounces it (5.1.1)
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.test",
                     timeout=30)
    s.sendmail("<>", ["nobody@example.test"],
               b"Subject: nobody\r\n\r\nx\r\n")
    s.quit()
    wait_for(lambda: "nobody@example.test" in maillog(pfroot) and
             "status=bounced" in maillog(pfroot), 60,
             "the bounce for nobody")
    assert "550 5.1.1 No such user" in maillog(pfroot)
