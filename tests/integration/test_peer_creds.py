"""Who may use mstored's sockets, by the peer's credentials (SO_PEERCRED,
SO_PEERGROUPS; docs/protocol.md, "Roles and sessions"): clients run as
other system users through setpriv.  The sockets are made 0666 here, so
that the file mode lets everyone in and only mstored's own check is
tested.  Needs root (setpriv, useradd)."""
import os
import pwd
import grp
import shutil
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import BUILD, prog
from dovecot_stack import ensure_system_user

HERE = os.path.dirname(os.path.abspath(__file__))
STORE_USER = "mstore"
MAIL_USER = "mstoremail"    # Dovecot's mail_uid in these tests
NOBODY = "nobody"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv (clients run as other users)")

# A client run as another user: HELLO on a socket, print the outcome.
CLIENT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import msproto
sock, user = sys.argv[2], sys.argv[3] or None
try:
    c = msproto.Client(sock, user=user, timeout=10)
    c.stats()
    print("ok")
except msproto.Error as e:
    print("refused %d %s" % (e.status, e.reason))
except (ConnectionError, OSError) as e:
    print("closed %s" % e)
"""


def as_user(name, sock, user, groups=None):
    """HELLO on sock (as mail user, or admin if user is empty) from a
    process of system user name, with these supplementary groups."""
    pw = pwd.getpwnam(name)
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}"]
    cmd += [f"--groups={','.join(map(str, groups))}"] if groups \
        else ["--clear-groups"]
    r = subprocess.run(cmd + [sys.executable, "-c", CLIENT, HERE, sock,
                              user or ""],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def daemon():
    ensure_system_user(STORE_USER)
    ensure_system_user(MAIL_USER)
    root = tempfile.mkdtemp(prefix="mstore-peers-")
    os.chmod(root, 0o755)
    conf = os.path.join(root, "mstore.conf")
    with open(conf, "w") as f:
        f.write(f"""[store]
primary = primary
secondary = secondary
socket = s.sock
socket_mode = 0666
admin_socket = a.sock
admin_socket_mode = 0666
user = {STORE_USER}
io_engine = psync
compact_interval = 0
user_socket_peers = {MAIL_USER}, @{STORE_USER}
""")
    log = open(os.path.join(root, "mstored.log"), "ab")
    p = subprocess.Popen([prog("mstored"), "-c", conf], stdout=log,
                         stderr=subprocess.STDOUT)
    end = time.time() + 30
    while subprocess.run([prog("mstore"), "-c", conf, "stats"],
                         capture_output=True).returncode != 0:
        assert p.poll() is None, open(log.name).read()
        assert time.time() < end, "mstored did not come up"
        time.sleep(0.05)
    for u in ("alice", NOBODY):
        subprocess.run([prog("mstore"), "-c", conf, "user", "add", u],
                       check=True, capture_output=True)
    yield root, conf, p
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    log.close()
    shutil.rmtree(root, ignore_errors=True)


def test_user_socket(daemon):
    root, conf, p = daemon
    s = os.path.join(root, "s.sock")
    # Dovecot's mail processes (listed) act for any mail user
    assert as_user(MAIL_USER, s, "alice") == "ok"
    # root and mstored's own uid too
    assert as_user("root", s, "alice") == "ok"
    assert as_user(STORE_USER, s, "alice") == "ok"
    # anyone else: only as the mail user of its own name
    out = as_user(NOBODY, s, "alice")
    assert out.startswith("refused -13 "), out
    assert "own name" in out
    assert as_user(NOBODY, s, NOBODY) == "ok"
    # a supplementary group in the list (SO_PEERGROUPS) lets it in
    gid = grp.getgrnam(STORE_USER).gr_gid
    assert as_user(NOBODY, s, "alice", groups=[gid]) == "ok"
    # nobody may take the admin role on the user socket
    assert as_user(MAIL_USER, s, "").startswith("refused -13 ")
    # refusals are logged with the peer's uid
    text = open(os.path.join(root, "mstored.log")).read()
    assert re.search(r"event=hello.refused user=alice "
                     r"error=\"peer uid %d\b" % pwd.getpwnam(NOBODY).pw_uid,
                     text), text[-2000:]


def test_admin_socket(daemon):
    root, conf, p = daemon
    a = os.path.join(root, "a.sock")
    assert as_user("root", a, "") == "ok"
    assert as_user(STORE_USER, a, "") == "ok"
    # whatever the socket's mode: other uids are turned away at accept
    for name in (MAIL_USER, NOBODY):
        out = as_user(name, a, "")
        assert out.startswith(("refused -13", "closed")), out
        out = as_user(name, a, "alice")
        assert out.startswith(("refused -13", "closed")), out
    text = open(os.path.join(root, "mstored.log")).read()
    assert "event=connection.refused socket=admin peer_uid=%d " % \
        pwd.getpwnam(NOBODY).pw_uid in text
    assert p.poll() is None


def test_bad_peer_list_refuses_start(tmp_path):
    ensure_system_user(STORE_USER)
    conf = tmp_path / "mstore.conf"
    conf.write_text("[store]\nprimary = p\nsecondary = s\n"
                    "socket = s.sock\nadmin_socket = a.sock\n"
                    "io_engine = psync\n"
                    "user_socket_peers = no-such-user-xyz\n")
    r = subprocess.run([prog("mstored"), "-c", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "no user no-such-user-xyz" in r.stderr
