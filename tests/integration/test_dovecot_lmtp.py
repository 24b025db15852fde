"""Dovecot's own LMTP delivering into the mstore storage (the later
option next to mstore-lmtpd): one transaction for two users.  Dovecot
saves the first recipient's copy from the raw message and the second
one from the first user's saved mail, i.e. a copy from another user,
which the plugin makes by value."""
import smtplib

from test_dovecot_imap import MSG, ok


def test_lmtp_two_recipients(stack):
    l = smtplib.LMTP("127.0.0.1", stack.lmtp_port)
    l.ehlo("gw.example.test")
    assert l.mail("sender@example.test")[0] == 250
    assert l.rcpt("alice@example.test")[0] == 250
    assert l.rcpt("bob@example.test")[0] == 250
    # LMTP: one reply per recipient after DATA (smtplib reads the first)
    code, text = l.data(MSG)
    assert code == 250, text
    code, text = l.getreply()
    assert code == 250 and b"bob@example.test" in text, text
    l.quit()
    for user in ("alice", "bob"):
        c = stack.imap(user)
        ok(c.select("INBOX"))
        data = ok(c.uid("FETCH", "1:*", "(BODY.PEEK[TEXT] RFC822.SIZE)"))
        assert len([d for d in data if isinstance(d, tuple)]) == 1, data
        assert data[0][1] == b"Hello, world.\r\n"
        c.logout()
    # the store has them as the truth
    assert list(stack.store_view("bob", "INBOX")) == [1]
