"""NOTIFY (RFC 5465) for folders that are not selected, with changes
made at the store (`mstore deliver`, as mstore-lmtpd delivers; a flag set
and an expunge by another store client): Dovecot's NOTIFY watches its
own index files, which the store's changes do not touch; the plugin
watches the user's change count on the session's store connection while
Dovecot waits, syncs the folders whose HIGHESTMODSEQ moved, and Dovecot
announces them as it does changes made by another session."""
import re
import signal
import socket
import time

from dovecot_stack import PASSWORD
from test_dovecot_imap import MSG, ok


class Session:
    """A raw IMAP session (imaplib cannot wait for unsolicited lines
    with a timeout and go on reading afterwards)."""

    def __init__(self, port, user):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.n = 0
        self.line()  # greeting
        self.cmd("LOGIN %s %s" % (user, PASSWORD))

    def line(self, timeout=30):
        """The next line, or None after timeout seconds."""
        end = time.time() + timeout
        while b"\r\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                return None
            if not d:
                raise EOFError("the server closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text):
        """Send a command; (its tagged line, the untagged lines)."""
        self.n += 1
        tag = b"t%d" % self.n
        self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.line()
            assert line is not None, (text, lines)
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), (text, line, lines)
                return line, lines
            lines.append(line)

    def until(self, pattern, timeout):
        """Untagged lines until one matches pattern: (it or None, all)."""
        lines = []
        end = time.time() + timeout
        while time.time() < end:
            line = self.line(end - time.time())
            if line is None:
                break
            lines.append(line)
            if re.search(pattern, line):
                return line, lines
        return None, lines

    def close(self):
        self.cmd("LOGOUT")
        self.s.close()


def _status(line):
    return dict((k.decode(), int(v)) for k, v in
                re.findall(rb"([A-Z]+) (\d+)", line))


def _notifying(stack, spec):
    """A folder Other next to INBOX, and a session that selected INBOX
    and said NOTIFY SET STATUS spec; Dovecot's first look (a STATUS of
    INBOX after the SET) has gone by."""
    c = stack.imap()
    ok(c.create("Other"))
    c.logout()
    s = Session(stack.imap_port, "alice")
    s.cmd("SELECT INBOX")
    s.cmd("NOTIFY SET STATUS " + spec)
    s.until(rb"^\* STATUS \"?INBOX", 1.5)
    return s


def test_notify_store_changes_of_other_folders(stack):
    """A session that selected INBOX and asked NOTIFY SET for its
    personal folders gets a STATUS of Other for each delivery into it
    at the store, for a flag change there, and for an expunge, each
    within a few seconds (Dovecot bundles a change for 0.5 s); none
    after NOTIFY NONE."""
    import msproto
    s = _notifying(stack, "(selected (MessageNew MessageExpunge "
                          "FlagChange)) (personal (MessageNew "
                          "MessageExpunge FlagChange))")
    waited = []
    for n in (1, 2):
        t0 = time.time()
        stack.deliver("alice", "Other", MSG)
        line, lines = s.until(rb"^\* STATUS \"?Other\"? ", 10)
        assert line is not None, lines
        st = _status(line)
        assert st["MESSAGES"] == n and st["UIDNEXT"] == n + 1, line
        waited.append(time.time() - t0)
    # a flag and an expunge made by another client of the store
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    m.store("Other", ((1, 1),), 0, 0x01)   # mode 0: add; \Seen
    line, lines = s.until(rb"^\* STATUS \"?Other\"? ", 10)
    assert line is not None, lines
    m.expunge("Other", ((1, 1),))
    line, lines = s.until(rb"^\* STATUS \"?Other\"? .*MESSAGES 1\b", 10)
    assert line is not None, lines
    m.close()
    print("announced after %s s" % ", ".join("%.2f" % w for w in waited))
    s.cmd("NOTIFY NONE")
    stack.deliver("alice", "Other", MSG)
    line, lines = s.until(rb"^\* STATUS", 3)
    assert line is None, lines
    s.close()
    assert not stack.log_problems()


def test_notify_across_a_store_restart(stack):
    """mstored restarted while a session waits with NOTIFY: the plugin
    connects again (after 1 s, then 2, 4 ... at most 10 s apart), and a
    delivery after the restart is announced."""
    stack.allow_errors = True   # the store unreachable for a moment
    s = _notifying(stack, "(personal (MessageNew MessageExpunge))")
    stack.kill_mstored()
    stack.start_mstored()
    stack.deliver("alice", "Other", MSG)
    try:
        line, lines = s.until(rb"^\* STATUS \"?Other\"? ", 20)
    except EOFError:
        raise AssertionError(open(stack.dlog, errors="replace").read()[-3000:])
    assert line is not None, lines
    assert _status(line)["MESSAGES"] == 1, line
    s.close()
    problems = [l for l in stack.log_problems() if "mstore" not in l]
    assert not problems, problems


def _down_for(stack, secs, wait):
    """A NOTIFYing session while mstored is killed and started again
    secs after, then a delivery: (the session, seconds from the kill to
    the store back, to the delivery, to the delivery's STATUS line, at
    most wait seconds after it)."""
    stack.allow_errors = True   # the store unreachable for a while
    s = _notifying(stack, "(personal (MessageNew MessageExpunge))")
    t0 = time.time()
    stack.kill_mstored(signal.SIGKILL)
    time.sleep(max(0.0, secs - (time.time() - t0)))
    stack.start_mstored()
    up = time.time() - t0
    stack.deliver("alice", "Other", MSG)
    delivered = time.time() - t0
    line, lines = s.until(rb"^\* STATUS \"?Other\"? ", wait)
    announced = time.time() - t0
    assert line is not None, lines
    assert _status(line)["MESSAGES"] == 1, line
    return s, up, delivered, announced


def test_notify_backs_off_while_the_store_is_down(stack):
    """While the store is down the plugin tries again 1 s after losing
    its connection, then 2 s and 4 s later (doubling; at most 10 s
    apart): with mstored back 4.5 s after it went, a delivery is
    announced only at the try 7 s after the loss, not within a second of
    the restart as a try every second would have it."""
    s, up, delivered, announced = _down_for(stack, 4.5, 30)
    print("store back after %.2f s, delivered at %.2f s, announced at "
          "%.2f s" % (up, delivered, announced))
    # the tries at 1, 3 and 7 s: the one at 7 s finds it (Dovecot
    # announces within its 0.5 s of bundling); a try every second would
    # have it at 5.5 s, one every 10 s at 10.5 s
    assert delivered < 6.5, (up, delivered)
    assert 6.5 <= announced < 9.0, (up, delivered, announced)
    s.close()
    problems = [l for l in stack.log_problems() if "mstore" not in l]
    assert not problems, problems


def test_notify_backoff_capped_at_10s(stack):
    """The tries' doubling stops at 10 s: after those at 1, 3, 7 and 15 s
    the next is at 25 s, not at 31 s.  With mstored back 16 s after it
    went, a delivery is announced by the try at 25 s."""
    s, _, delivered, announced = _down_for(stack, 16.0, 20)
    print("delivered at %.2f s, announced at %.2f s" % (delivered,
                                                        announced))
    assert delivered < 24.0, delivered
    assert 24.0 <= announced < 28.0, (delivered, announced)
    s.close()
    problems = [l for l in stack.log_problems() if "mstore" not in l]
    assert not problems, problems


def test_notify_during_idle(stack):
    """A session in IDLE with NOTIFY set is told of a delivery into
    another folder (STATUS) and of one into the selected folder
    (EXISTS), both made at the store."""
    s = _notifying(stack, "(selected (MessageNew MessageExpunge)) "
                          "(personal (MessageNew MessageExpunge))")
    s.n += 1
    tag = b"t%d" % s.n
    s.s.sendall(tag + b" IDLE\r\n")
    line, lines = s.until(rb"^\+ ", 10)
    assert line is not None, lines
    stack.deliver("alice", "Other", MSG)
    line, lines = s.until(rb"^\* STATUS \"?Other\"? ", 10)
    assert line is not None, lines
    stack.deliver("alice", "INBOX", MSG)
    line, lines = s.until(rb"^\* 1 EXISTS", 10)
    assert line is not None, lines
    s.s.sendall(b"DONE\r\n")
    line, lines = s.until(tag + rb" OK", 10)
    assert line is not None, lines
    s.close()
    assert not stack.log_problems()
