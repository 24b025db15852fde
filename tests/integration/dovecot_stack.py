"""A private mstored and a private Dovecot 2.3 with the mstore storage
plugin, on loopback, for the plugin's integration tests.

Stack(tmp_path).start() makes, under one scratch directory (chmod 755):
  - mstore.conf and the store (mstored runs as root and drops to the
    system user `mstore` after binding, so the store and both sockets
    belong to it; the user socket is 0660, the admin socket 0600);
  - dovecot.conf with its own base_dir, state_dir, logs and instance
    name, imap and pop3 on 127.0.0.1 at free high ports, passwd-file
    users, plaintext auth, mail as the system user `mstoremail`, whose
    processes get the group `mstore` through mail_access_groups: that is
    what lets them reach the user socket and nothing else.
Options: sieve=True (Pigeonhole in Dovecot's LMTP, each user's
~/.dovecot.sieve, set_sieve()), fts=True (fts + fts_xapian, autoindex,
enforced), lmtpd=True (mstore-lmtpd on a free 127.0.0.1 port,
lmtpd_deliver()).
The system users are made with `useradd --system` when missing (this
needs root, as Dovecot itself does).  stop() stops Dovecot and mstored
by the PIDs they wrote and waits until they are gone.
"""
import grp
import imaplib
import os
import poplib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

from conftest import free_port

MAIL_USER = "mstoremail"
STORE_USER = "mstore"
PASSWORD = "secret"

# Dovecot's attachment decoder protocol (fts-parser-script.c): run with
# no argument, the script lists the content types it decodes, each with
# file name extensions for application/octet-stream, then an empty line;
# run with a content type, it turns the attachment on stdin into UTF-8
# text on stdout.  This one undoes ROT13: the words it gives are nowhere
# in the message, so a search finds them only through the decoder.
FTS_DECODER_SCRIPT = """#!/bin/sh
if [ -z "$1" ]; then
  printf 'application/x-mstore-rot13 rot13\\n\\n'
  exit 0
fi
exec tr 'A-Za-z' 'N-ZA-Mn-za-m'
"""


def ensure_system_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    r = subprocess.run(["useradd", "--system", "--user-group",
                        "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name],
                       capture_output=True, text=True)
    # another test may have made it meanwhile
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"useradd {name} failed: {r.stderr}")


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()
        if int(fields[1]) == ppid and fields[0] != "Z":
            out.append((int(d), cmd))
    return out


class Stack:
    def __init__(self, root, build, users=("alice", "bob"), sieve=False,
                 fts=False, fts_decoder=False, lmtpd=False,
                 lmtpd_indexer=False,
                 mail_log=False, shared=False, public=False,
                 virtual=False, lazy_expunge=None, trash=False,
                 imapsieve=None,
                 dovecot_conf="",
                 quota="*:storage=1G:messages=1000", store_conf="",
                 user_fields=None):
        self.root = str(root)
        self.build = build
        self.users = list(users)
        # Dovecot's LMTP runs each user's ~/.dovecot.sieve (Pigeonhole)
        self.sieve = sieve
        # Dovecot's FTS with the xapian backend, autoindexing saves
        self.fts = fts
        # ... with an attachment decoder (fts_decoder, a script service):
        # application/x-mstore-rot13 and files named *.rot13 are indexed
        # as the text their ROT13 gives (FTS_DECODER_SCRIPT)
        self.fts_decoder = fts_decoder
        if fts_decoder and not fts:
            raise ValueError("fts_decoder needs fts")
        # mstore-lmtpd on a free port, delivering straight to mstored
        self.lmtpd = lmtpd
        # ... and telling Dovecot's indexer which folders got mail
        # ([lmtp] dovecot_indexer: FTS indexes it as it arrives)
        self.lmtpd_indexer = lmtpd_indexer
        # Dovecot's mail_log: a line per save and copy, with fields read
        # from the saved mail itself while it is being saved
        self.mail_log = mail_log
        # Dovecot's ACL plugin and a shared namespace "shared/USER/"
        # over the other users' mstore mail (IMAP SETACL grants)
        self.shared = shared
        # ... and a public namespace "Public/" over the store user
        # "public" (plugin { mstore_public_user })
        self.public = public
        # Dovecot's virtual plugin: virtual/All (every message of every
        # folder) and virtual/Flagged, over the user's mstore folders
        self.virtual = virtual
        # Dovecot's lazy_expunge: what is expunged goes to a folder of
        # its own ("mailbox": the one folder .EXPUNGED; "namespace": a
        # hidden namespace expunged/ with a folder per source folder)
        self.lazy_expunge = lazy_expunge
        # Dovecot's trash plugin: over quota, the oldest mail of Trash
        # goes first (needs quota)
        self.trash = trash
        # Dovecot's imap_sieve: this Sieve script runs on each message
        # COPY'd, MOVE'd or APPEND'ed into Junk (spam training)
        self.imapsieve = imapsieve
        # more dovecot.conf, at its end
        self.dovecot_conf = dovecot_conf
        # Dovecot's quota plugin (the count backend over the store)
        # with this quota_rule; None: no quota plugin
        self.quota = quota
        # {user: "userdb_mail=maildir:~/Maildir ..."}: extra fields of
        # those users' passwd-file lines (userdb_ fields override the
        # user's settings)
        self.user_fields = dict(user_fields or {})
        # more [store] lines for mstored
        self.store_conf = store_conf
        self.lmtpd_proc = None
        self.mstored_pid = None
        self.dovecot_pid = None
        # a test that provokes errors on purpose (kill -9) sets this
        self.allow_errors = False

    # ---- paths ----
    def p(self, *parts):
        return os.path.join(self.root, *parts)

    @property
    def conf(self):
        return self.p("mstore.conf")

    @property
    def dconf(self):
        return self.p("dovecot.conf")

    @property
    def dlog(self):
        return self.p("log", "dovecot.log")

    def home(self, user):
        return self.p("home", user)

    def index_dir(self, user):
        return os.path.join(self.home(user), "mstore")

    # ---- mstored ----
    def mstore(self, *args, check=True, input=None):
        r = subprocess.run([os.path.join(self.build, "mstore"), "-c",
                            self.conf, *map(str, args)],
                           capture_output=True, input=input, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"mstore {args}: {r.returncode} "
                                 f"{r.stdout!r} {r.stderr!r}")
        return r

    def deliver(self, user, mailbox, data):
        path = self.p("deliver.eml")
        with open(path, "wb") as f:
            f.write(data)
        self.mstore("deliver", user, mailbox, path)

    def start_mstored(self, standby=False):
        """mstored on the stack's store; standby=True: `mstored
        --standby` on the same store, read-only (every write -EROFS), as
        at the DR site before mstore promote."""
        self.mstored_log = open(self.p("mstored.log"), "ab")
        self.mstored = subprocess.Popen(
            [os.path.join(self.build, "mstored"), "-c", self.conf] +
            (["--standby"] if standby else []),
            stdout=self.mstored_log, stderr=subprocess.STDOUT)
        self.mstored_pid = self.mstored.pid
        end = time.time() + 30
        while time.time() < end:
            if self.mstored.poll() is not None:
                raise RuntimeError("mstored exited: " +
                                   open(self.p("mstored.log")).read())
            if self.mstore("stats", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("mstored did not come up")

    def kill_mstored(self, sig=signal.SIGTERM):
        if self.mstored_pid is None:
            return
        try:
            os.kill(self.mstored_pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.mstored.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(self.mstored_pid, signal.SIGKILL)
            self.mstored.wait(timeout=30)
        self.mstored_pid = None
        self.mstored_log.close()

    def start_lmtpd(self):
        self.lmtpd_log = open(self.p("lmtpd.log"), "ab")
        self.lmtpd_proc = subprocess.Popen(
            [os.path.join(self.build, "mstore-lmtpd"), "-c", self.conf],
            stdout=self.lmtpd_log, stderr=subprocess.STDOUT)
        end = time.time() + 20
        while time.time() < end:
            if self.lmtpd_proc.poll() is not None:
                raise RuntimeError("mstore-lmtpd exited: " +
                                   open(self.p("lmtpd.log")).read())
            if "event=store.connected" in open(self.p("lmtpd.log")).read():
                try:
                    socket.create_connection(
                        ("127.0.0.1", self.mlmtp_port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("mstore-lmtpd did not come up")

    def stop_lmtpd(self):
        if self.lmtpd_proc is None:
            return
        if self.lmtpd_proc.poll() is None:
            self.lmtpd_proc.terminate()
            try:
                self.lmtpd_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.lmtpd_proc.kill()
                self.lmtpd_proc.wait(timeout=30)
        self.lmtpd_proc = None
        self.lmtpd_log.close()

    def lmtpd_deliver(self, rcpt, data):
        """One message to mstore-lmtpd (not through Dovecot)."""
        import smtplib
        l = smtplib.LMTP("127.0.0.1", self.mlmtp_port, timeout=60)
        try:
            l.ehlo("gw.example.test")
            code, text = l.mail("sender@example.test")
            assert code == 250, text
            code, text = l.rcpt(rcpt)
            assert code == 250, text
            code, text = l.data(data)
            assert code == 250, text
            l.quit()
        finally:
            l.close()

    # ---- dovecot ----
    def make_module_dir(self):
        """Dovecot's own plugins (quota, imap_quota, ...) and ours, in
        one directory for mail_plugin_dir."""
        mods = self.p("modules")
        os.makedirs(mods, exist_ok=True)
        sysdir = "/usr/lib/dovecot/modules"
        for name in os.listdir(sysdir):
            if name.endswith(".so") and "mstore" not in name:
                os.symlink(os.path.join(sysdir, name),
                           os.path.join(mods, name))
        os.symlink(os.path.join(self.build, "modules",
                                "lib20_mstore_plugin.so"),
                   os.path.join(mods, "lib20_mstore_plugin.so"))

    def extra_conf(self):
        """The optional parts of dovecot.conf (sieve, fts)."""
        plugins = ""
        conf = ""
        plugin = ""
        if self.fts:
            plugins += " fts fts_xapian"
            # fts_enforced: a SEARCH BODY/TEXT is answered from the
            # index, brought up to date first (by the indexer), never
            # by reading every body
            plugin += """
  fts = xapian
  fts_xapian = partial=3 full=20 verbose=0
  fts_autoindex = yes
  fts_enforced = yes
"""
            conf += """
service indexer-worker {
  vsz_limit = 1G
}
"""
            if self.fts_decoder:
                script = self.p("fts-decoder.sh")
                with open(script, "w") as f:
                    f.write(FTS_DECODER_SCRIPT)
                os.chmod(script, 0o755)
                plugin += "  fts_decoder = decode2text\n"
                conf += f"""
service decode2text {{
  executable = script {script}
  user = {MAIL_USER}
  unix_listener decode2text {{
    mode = 0666
  }}
}}
"""
        if self.virtual:
            plugins += " virtual"
            conf += f"""
namespace virtual {{
  prefix = virtual/
  separator = /
  location = virtual:{self.p('virtual')}:INDEX=~/virtual
  list = yes
  subscriptions = no
}}
"""
        if self.lazy_expunge:
            plugins += " lazy_expunge"
            plugin += f"""
  lazy_expunge = {'.EXPUNGED' if self.lazy_expunge == 'mailbox'
                  else 'expunged/'}
  lazy_expunge_only_last_instance = yes
"""
            if self.lazy_expunge == "namespace":
                conf += """
namespace expunged {
  prefix = expunged/
  separator = /
  location = mstore:~/mstore-expunged
  hidden = yes
  list = no
  subscriptions = no
}
"""
        if self.trash:
            plugins += " trash"
            with open(self.p("trash.conf"), "w") as f:
                f.write("1 Trash\n")
            plugin += f"""
  trash = {self.p('trash.conf')}
"""
        if self.imapsieve:
            # in a directory of the mail user's: Pigeonhole writes the
            # compiled script next to it
            mu = pwd.getpwnam(MAIL_USER)
            os.makedirs(self.p("imapsieve"), exist_ok=True)
            os.chown(self.p("imapsieve"), mu.pw_uid, mu.pw_gid)
            script = self.p("imapsieve", "junk.sieve")
            with open(script, "w") as f:
                f.write(self.imapsieve)
            os.chmod(script, 0o644)
            plugin += f"""
  sieve_plugins = sieve_imapsieve
  imapsieve_mailbox1_name = Junk
  imapsieve_mailbox1_causes = COPY APPEND
  imapsieve_mailbox1_before = file:{script}
"""
            conf += """
protocol imap {
  mail_plugins = $mail_plugins imap_sieve
}
"""
        if self.mail_log:
            plugins += " notify mail_log"
            plugin += """
  mail_log_events = save copy
  mail_log_fields = uid box msgid size vsize from subject
"""
        if self.shared or self.public:
            plugins += " acl"
            plugin += f"""
  acl = vfile
  acl_shared_dict = file:{self.p('acl', 'shared-mailboxes.db')}
"""
            conf += """
protocol imap {
  mail_plugins = $mail_plugins imap_acl
}
"""
        if self.public:
            plugin += """
  mstore_public_user = public
"""
            conf += f"""
namespace public {{
  type = public
  separator = /
  prefix = Public/
  location = mstore:{self.p('public')}:INDEXPVT=~/public
  subscriptions = no
  list = children
}}
"""
        if self.shared:
            conf += """
namespace shared {
  type = shared
  separator = /
  prefix = shared/%%u/
  location = mstore:%%h/mstore:INDEXPVT=~/shared/%%u
  subscriptions = no
  list = children
}
service auth {
  unix_listener auth-userdb {
    mode = 0666
  }
}
"""
        if self.sieve:
            plugin += """
  sieve = file:~/sieve;active=~/.dovecot.sieve
"""
            conf += """
protocol lmtp {
  mail_plugins = $mail_plugins sieve
}
"""
        conf += self.dovecot_conf
        return plugins, plugin, conf

    def write_dovecot_conf(self):
        mu = pwd.getpwnam(MAIL_USER)
        x_plugins, x_plugin, x_conf = self.extra_conf()
        quota_conf = "" if not self.quota else f"""  quota = count:User quota
  quota_vsizes = yes
  quota_rule = {self.quota}
"""
        lines = [f"{u}:{{PLAIN}}{PASSWORD}:{mu.pw_uid}:{mu.pw_gid}::"
                 f"{self.home(u)}" +
                 (f"::{self.user_fields[u]}" if u in self.user_fields
                  else "") for u in self.users]
        with open(self.p("passwd"), "w") as f:
            f.write("\n".join(lines) + "\n")
        conf = f"""
base_dir = {self.p('run')}
state_dir = {self.p('state')}
instance_name = mstoretest{os.getpid()}_{self.imap_port}
listen = 127.0.0.1
protocols = imap pop3 lmtp
log_path = {self.dlog}
info_log_path = {self.p('log', 'dovecot-info.log')}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# the store's user names are bare: LMTP's alice@example.test is alice
auth_username_format = %Ln
first_valid_uid = {mu.pw_uid}
last_valid_uid = {mu.pw_uid}
first_valid_gid = {mu.pw_gid}
last_valid_gid = {mu.pw_gid}
mail_access_groups = {STORE_USER}
mail_plugin_dir = {self.p('modules')}
mail_plugins = mstore{' quota' if self.quota else ''}{x_plugins}
mail_location = mstore:~/mstore
# the plugin's read-ahead of bodies (docs/dovecot-plugin.md)
mail_prefetch_count = 4
pop3_uidl_format = %08Xu%08Xv
mailbox_idle_check_interval = 30 secs
imap_idle_notify_interval = 2 mins
plugin {{
  mstore_socket = {self.p('mstored.sock')}
{quota_conf}{x_plugin}}}
passdb {{
  driver = passwd-file
  args = {self.p('passwd')}
}}
userdb {{
  driver = passwd-file
  args = {self.p('passwd')}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
}}
protocol imap {{
  mail_max_userip_connections = 200
  mail_plugins = $mail_plugins{' imap_quota' if self.quota else ''}
}}
protocol pop3 {{
  mail_max_userip_connections = 50
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap {{
  process_limit = 200
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
lmtp_save_to_detail_mailbox = no
{x_conf}"""
        with open(self.dconf, "w") as f:
            f.write(conf)

    def start_dovecot(self):
        pidfile = self.p("run", "master.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        # not a pipe: the daemon keeps its stderr, and a pipe would
        # never reach EOF
        with open(self.p("log", "dovecot-start.log"), "ab") as out:
            r = subprocess.run(["dovecot", "-c", self.dconf],
                               stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError("dovecot did not start: " + open(
                self.p("log", "dovecot-start.log")).read())
        end = time.time() + 20
        while time.time() < end:
            if os.path.exists(pidfile):
                try:
                    self.dovecot_pid = int(open(pidfile).read())
                    break
                except ValueError:
                    pass
            time.sleep(0.05)
        # wait for the listeners
        while time.time() < end:
            try:
                socket.create_connection(("127.0.0.1", self.imap_port),
                                         timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dovecot did not listen")

    def stop_dovecot(self):
        if self.dovecot_pid is None:
            return
        kids = [p for p, _ in children(self.dovecot_pid)]
        try:
            os.kill(self.dovecot_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_gone(self.dovecot_pid)
        for k in kids:
            wait_gone(k, 10)
        self.dovecot_pid = None

    def doveadm(self, command, *args, check=True, user=None):
        """doveadm -c OUR.conf COMMAND [-u USER] ARGS...; COMMAND may be
        several words ("mailbox list")."""
        cmd = ["doveadm", "-c", self.dconf] + command.split()
        if user is not None:
            cmd += ["-u", user]
        cmd += [str(a) for a in args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        # doveadm's errors go to its stderr, not to Dovecot's log: a
        # command that succeeds says none (an index it had to repair
        # says "Error: ... fscking")
        if check and (r.returncode != 0 or "Error:" in r.stderr or
                      "Panic:" in r.stderr):
            raise AssertionError(f"doveadm {command} {args}: {r.returncode} "
                                 f"{r.stdout} {r.stderr}")
        return r

    def doveadm_fresh(self, command, *args, user):
        """doveadm with a brand-new, empty index directory as
        mail_location: what it prints comes straight from the store."""
        mu = pwd.getpwnam(MAIL_USER)
        self.fresh_n = getattr(self, "fresh_n", 0) + 1
        d = self.p("fresh", f"{user}-{self.fresh_n}")
        os.makedirs(d)
        os.chown(self.p("fresh"), mu.pw_uid, mu.pw_gid)
        os.chown(d, mu.pw_uid, mu.pw_gid)
        r = subprocess.run(["doveadm", "-c", self.dconf, "-o",
                            f"mail_location=mstore:{d}", "-f", "flow"] +
                           command.split() + ["-u", user] +
                           [str(a) for a in args],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or "Error:" in r.stderr or \
                "Panic:" in r.stderr:
            raise AssertionError(f"doveadm {command}: {r.stdout} "
                                 f"{r.stderr}")
        return r.stdout

    def set_sieve(self, user, script):
        """The user's active Sieve script (~/.dovecot.sieve), owned by
        the mail user so that Pigeonhole can compile it next to it."""
        mu = pwd.getpwnam(MAIL_USER)
        path = os.path.join(self.home(user), ".dovecot.sieve")
        with open(path, "w") as f:
            f.write(script)
        os.chown(path, mu.pw_uid, mu.pw_gid)
        return path

    def lmtp_send(self, sender, rcpts, data):
        """One LMTP transaction with Dovecot's LMTP: the reply (code,
        text) of each recipient after DATA."""
        import smtplib
        l = smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=60)
        try:
            l.ehlo("gw.example.test")
            code, text = l.mail(sender)
            assert code == 250, text
            for r in rcpts:
                code, text = l.rcpt(r)
                assert code == 250, (r, text)
            # smtplib reads the first recipient's reply, the rest here
            replies = [l.data(data)]
            for _ in rcpts[1:]:
                replies.append(l.getreply())
            l.quit()
        finally:
            l.close()
        return replies

    def store_view(self, user, mailbox):
        """uid -> sorted flags (without \\Recent), from the store."""
        out = {}
        for line in self.doveadm_fresh("fetch", "uid flags", "mailbox",
                                       mailbox, "all",
                                       user=user).splitlines():
            m = re.match(r"uid=(\d+) flags=(.*)$", line)
            if m:
                out[int(m.group(1))] = sorted(
                    x for x in m.group(2).split() if x != "\\Recent")
        return out

    def imap_pids(self, kind="imap"):
        """PIDs of the master's children of this kind (process titles
        are "dovecot-<instance>/<kind>")."""
        if self.dovecot_pid is None:
            return []
        return [p for p, c in children(self.dovecot_pid)
                if c.split(" ")[0].rsplit("/", 1)[-1] == kind]

    # ---- the whole stack ----
    def start(self):
        ensure_system_user(STORE_USER)
        mu = ensure_system_user(MAIL_USER)
        os.chmod(self.root, 0o755)
        for d in ("store", "log", "run", "state", "home"):
            os.makedirs(self.p(d), exist_ok=True)
        for u in self.users:
            os.makedirs(self.home(u), exist_ok=True)
            os.chown(self.home(u), mu.pw_uid, mu.pw_gid)
        if self.virtual:
            # the virtual folders' definitions (dovecot-virtual files)
            for box, rule in (("All", "*\n  all\n"),
                              ("Flagged", "*\n  flagged\n")):
                d = self.p("virtual", box)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "dovecot-virtual"), "w") as f:
                    f.write(rule)
                os.chown(d, mu.pw_uid, mu.pw_gid)
            os.chown(self.p("virtual"), mu.pw_uid, mu.pw_gid)
        if self.shared or self.public:
            # the ACL plugin's dictionary of who shares with whom, and
            # the public folders' index cache: the mail processes'
            for d in ("acl", "public"):
                os.makedirs(self.p(d), exist_ok=True)
                os.chown(self.p(d), mu.pw_uid, mu.pw_gid)
        with open(self.conf, "w") as f:
            f.write(f"""[store]
primary = store/primary
secondary = store/secondary
index = store/index
segment_size = 4M
io_engine = psync
socket = mstored.sock
socket_mode = 0660
admin_socket = mstored-admin.sock
admin_socket_mode = 0600
user = {STORE_USER}
user_socket_peers = {MAIL_USER}
compact_interval = 0
""")
            if self.store_conf:
                f.write(self.store_conf.rstrip("\n") + "\n")
            if self.lmtpd:
                self.mlmtp_port = free_port()
                f.write(f"""[lmtp]
listen = 127.0.0.1:{self.mlmtp_port}
hostname = lmtp.example.test
""")
                if self.lmtpd_indexer:
                    f.write(f"dovecot_indexer = {self.p('run', 'indexer')}\n")
        self.start_mstored()
        for u in self.users:
            self.mstore("user", "add", u)
        if self.public:
            self.mstore("user", "add", "public")
        if self.lmtpd:
            self.start_lmtpd()
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.lmtp_port = free_port()
        self.make_module_dir()
        self.write_dovecot_conf()
        self.start_dovecot()
        return self

    def stop(self):
        self.stop_dovecot()
        self.stop_lmtpd()
        self.kill_mstored()

    # ---- clients ----
    def imap(self, user="alice"):
        c = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=60)
        c.login(user, PASSWORD)
        return c

    def pop3(self, user="alice"):
        c = poplib.POP3("127.0.0.1", self.pop3_port, timeout=60)
        c.user(user)
        c.pass_(PASSWORD)
        return c

    def log_problems(self):
        """Lines of Dovecot's log with Panic, Error, Fatal or Corrupted."""
        try:
            text = open(self.dlog, errors="replace").read()
        except FileNotFoundError:
            return []
        bad = ("Panic", "Error", "Fatal", "Corrupted", "corrupted")
        return [l for l in text.splitlines()
                if any(b in l for b in bad) and not self._benign(l)]

    def _benign(self, line):
        """fts_xapian logs an Error when a lookup opens a mailbox's
        database before the indexer's first run has created it (a race
        inside fts_xapian, seen under load); what the searches return
        is checked by the FTS test itself.  Only with fts on, and only
        that line."""
        return (self.fts and "FTS Xapian: Can not open RO index" in line
                and "DatabaseNotFoundError" in line)
