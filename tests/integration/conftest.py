"""Shared fixtures for the integration tests: where the built programs
are, and a scratch directory per test (pytest's tmp_path)."""
import os
import shutil
import socket
import subprocess

import pytest

BUILD = os.environ.get("MSTORE_BUILD") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
BUILD = os.path.abspath(BUILD)


def prog(name):
    path = os.path.join(BUILD, name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is not built (run make)")
    return path


_ports_given = set()


def free_port():
    """A TCP port of 127.0.0.1 that nothing is bound to now and that this
    process has not handed out before.  The kernel may give two binds in
    a row the same free port, and one server's listeners (IMAP, POP3,
    LMTP) are picked in a row: Dovecot then refused its configuration
    ("duplicate listener")."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no free port that was not handed out before")


def run(*args, check=None, **kw):
    """Run a program of ours; return CompletedProcess with text output."""
    p = subprocess.run([str(a) for a in args], capture_output=True,
                       text=True, timeout=120, **kw)
    if check is not None and p.returncode != check:
        raise AssertionError(
            f"{args} exited {p.returncode}, expected {check}\n"
            f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture
def mstore():
    path = prog("mstore")

    def call(*args, check=None):
        return run(path, *args, check=check)
    return call


SRC = os.environ.get("MSTORE_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))


def run_sh(*args, var):
    """tests/lib/run.sh (what make run/stop call) against a scratch var."""
    env = dict(os.environ, MSTORE_VAR=str(var))
    return subprocess.run([os.path.join(SRC, "tests/lib/run.sh"), *args,
                           BUILD], capture_output=True, text=True,
                          env=env, timeout=120)


def _plugin_skip_reason():
    if os.geteuid() != 0:
        return "the Dovecot tests need root (a private Dovecot, useradd)"
    if not os.path.exists(os.path.join(BUILD, "modules",
                                       "lib20_mstore_plugin.so")):
        return "the Dovecot plugin is not built (no dovecot-dev?)"
    if shutil.which("dovecot") is None and not os.path.exists(
            "/usr/sbin/dovecot"):
        return "Dovecot is not installed"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "dovecot(**opts): options of the `stack` fixture's "
        "Dovecot (sieve=True, fts=True; see dovecot_stack.Stack)")


@pytest.fixture
def stack(request):
    """A private mstored and Dovecot with the mstore plugin
    (dovecot_stack.Stack), users alice and bob; stopped after the test,
    and the test fails if Dovecot logged a Panic, Error or Corrupted.
    A test marked @pytest.mark.dovecot(sieve=True, fts=True) gets those
    parts of Dovecot too."""
    reason = _plugin_skip_reason()
    if reason:
        pytest.skip(reason)
    import tempfile
    from dovecot_stack import Stack
    # not pytest's tmp_path: its parents are 0700, and Dovecot's
    # unprivileged processes must reach the passwd file and the homes
    root = tempfile.mkdtemp(prefix="mstore-dovecot-")
    marker = request.node.get_closest_marker("dovecot")
    mods = "/usr/lib/dovecot/modules"
    for opt, lib, pkg in (("sieve", "lib90_sieve_plugin.so", "dovecot-sieve"),
                          ("imapsieve", "lib95_imap_sieve_plugin.so",
                           "dovecot-sieve"),
                          ("fts", "lib21_fts_xapian_plugin.so",
                           "dovecot-fts-xapian")):
        if marker and marker.kwargs.get(opt) and not os.path.exists(
                os.path.join(mods, lib)):
            pytest.skip(f"{pkg} is not installed ({lib})")
    s = Stack(root, BUILD, **(marker.kwargs if marker else {}))
    ok = False
    try:
        s.start()
        yield s
        if not s.allow_errors:
            problems = s.log_problems()
            assert not problems, "\n".join(problems)
        ok = True
    finally:
        s.stop()
        if ok and not os.environ.get("MSTORE_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            print(f"kept {root} for a look")
