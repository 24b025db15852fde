"""make install into a DESTDIR: programs, man pages (groff finds nothing
to warn about), systemd units (systemd-analyze verify), the example
configs (each daemon's -t, doveconf, postconf)."""

import os
import shutil
import subprocess

import pytest

SRC = os.environ.get("MSTORE_SRC", os.getcwd())
BUILD = os.environ.get("MSTORE_BUILD", os.path.join(SRC, "build"))


def sh(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = tmp_path_factory.mktemp("dest")
    r = sh("make", "-C", SRC, "B=" + BUILD, "install", "DESTDIR=" + str(d),
           "PREFIX=/usr/local")
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "usr/local"


def test_files(dest):
    for f in ("bin/mstore", "sbin/mstored", "sbin/mstore-lmtpd",
              "share/man/man1/mstore.1", "share/man/man5/mstore.conf.5",
              "share/man/man8/mstored.8", "share/man/man8/mstore-lmtpd.8",
              "lib/systemd/system/mstored.service",
              "lib/systemd/system/mstore-lmtpd.service",
              "share/doc/mstore/examples/mstore.conf"):
        assert (dest / f).is_file(), f
    assert os.access(dest / "sbin/mstored", os.X_OK)


def test_plugin_exports_only_its_entry_points():
    """Dovecot loads plugins with RTLD_GLOBAL: the plugin exports its
    module entry points and nothing else (no msg_error, ms_buf_init...
    to meet another plugin's names)."""
    so = os.path.join(BUILD, "modules", "lib20_mstore_plugin.so")
    if not os.path.exists(so):
        pytest.skip("the Dovecot plugin is not built here")
    r = sh("nm", "-D", "--defined-only", so)
    assert r.returncode == 0, r.stderr
    names = {line.split()[-1] for line in r.stdout.splitlines() if line}
    assert names == {"mstore_plugin_init", "mstore_plugin_deinit",
                     "mstore_plugin_version"}, names


def test_plugin_needs_only_dovecot_and_libc():
    """Every imap, pop3 and lmtp process maps and relocates each shared
    object the plugin needs when it loads it: the plugin needs Dovecot's
    libraries and libc, nothing of ours (xxHash, the one library its code
    uses, is compiled in: store/rec.c)."""
    so = os.path.join(BUILD, "modules", "lib20_mstore_plugin.so")
    if not os.path.exists(so):
        pytest.skip("the Dovecot plugin is not built here")
    r = sh("readelf", "-d", "-W", so)
    assert r.returncode == 0, r.stderr
    needed = {line.split("[", 1)[1].rstrip("]")
              for line in r.stdout.splitlines() if "(NEEDED)" in line}
    allowed = {"libdovecot-storage.so.0", "libdovecot.so.0", "libc.so.6",
               "ld-linux-x86-64.so.2"}
    assert needed and needed <= allowed, needed - allowed


def test_full_relro():
    """Linked as Debian links Dovecot, its plugins and its daemons: full
    RELRO (the GOT is bound at load and then read-only), so no first
    call in a session pays for a symbol lookup either."""
    files = [os.path.join(BUILD, p) for p in
             ("mstored", "mstore-lmtpd", "udsync", "mstore",
              "modules/lib20_mstore_plugin.so")]
    files = [f for f in files if os.path.exists(f)]
    assert len(files) >= 4, files
    for f in files:
        r = sh("readelf", "-d", "-l", "-W", f)
        assert r.returncode == 0, r.stderr
        assert "GNU_RELRO" in r.stdout, f
        flags = [line for line in r.stdout.splitlines()
                 if "(FLAGS" in line]
        assert any("BIND_NOW" in line or " NOW" in line for line in flags), \
            (f, flags)


def test_man_pages(dest):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    pages = sorted((dest / "share/man").glob("man*/*"))
    assert len(pages) >= 4
    for p in pages:
        r = sh("groff", "-man", "-Tutf8", "-ww", "-z", str(p))
        assert r.returncode == 0 and r.stderr == "", (p, r.stderr)
    # every [store] key of docs/config.md is in mstore.conf(5)
    text = (dest / "share/man/man5/mstore.conf.5").read_text()
    for key in ("primary", "undelete_window", "compact_interval",
                "max_message_size", "trusted_gateways"):
        assert "\n.B " + key + "\n" in text, key


def test_units(dest, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = sorted((dest / "lib/systemd/system").glob("*.service"))
    assert units
    for u in units:
        text = u.read_text()
        assert "/usr/local/sbin/" in text and "@" not in text, u
        # verify against the installed binaries
        (tmp_path / u.name).write_text(
            text.replace("/usr/local/sbin", str(dest / "sbin")))
    r = sh("systemd-analyze", "verify", "--man=no",
           *[str(tmp_path / u.name) for u in units])
    assert r.returncode == 0, r.stdout + r.stderr


def test_examples(dest, tmp_path):
    ex = dest / "share/doc/mstore/examples"
    for prog in ("mstored", "mstore-lmtpd"):
        r = sh(str(dest / "sbin" / prog), "-c", str(ex / "mstore.conf"),
               "-t")
        assert r.returncode == 0, (prog, r.stderr)
    if shutil.which("doveconf"):
        for f in ("dovecot-backend.conf", "dovecot-dr.conf",
                  "dovecot-proxy.conf"):
            r = sh("doveconf", "-c", str(ex / f), "-n")
            assert r.returncode == 0, (f, r.stderr)
    if shutil.which("postconf") and os.path.exists("/etc/postfix/master.cf"):
        shutil.copy(ex / "postfix-main.cf", tmp_path / "main.cf")
        shutil.copy("/etc/postfix/master.cf", tmp_path / "master.cf")
        r = sh("postconf", "-c", str(tmp_path), "-n")
        assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
