"""Dovecot's own LMTP delivering into the mstore storage (the later
option next to mstore-lmtpd): one transaction for two users.  Dovecot
saves the first recipient's copy from the raw message and the second
one from the first user's saved mail, i.e. a copy from another user,
which the plugin makes by value."""
import smtplib

import pytest

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


@pytest.mark.dovecot(dovecot_conf="""
protocol lmtp {
  mail_plugins = $mail_plugins notify push_notification
  mail_debug = yes
}
plugin {
  push_notification_driver = dlog
}
""")
def test_lmtp_push_notification(stack):
    """Dovecot's push_notification (here its dlog driver, which logs what
    a push driver is handed) sees each message Dovecot's LMTP saves into
    the store: a site with mobile push delivers through Dovecot's LMTP,
    as a site with Sieve does.  mstore-lmtpd writes to the store without
    Dovecot, so no Dovecot plugin hears of its deliveries (FTS has its
    own way: [lmtp] dovecot_indexer)."""
    import msproto
    import os
    # debug lines go to the info log
    info = stack.p("log", "dovecot-info.log")
    before = os.path.getsize(info) if os.path.exists(info) else 0
    replies = stack.lmtp_send("a@example.test",
                              ["alice@example.test", "bob@example.test"],
                              MSG)
    assert [r[0] for r in replies] == [250, 250], replies
    with open(info) as f:
        f.seek(before)
        log = f.read()
    for user in ("alice", "bob"):
        lines = [l for l in log.splitlines() if f"lmtp({user})" in l]
        assert any("process_msg push_notification" in l
                   for l in lines), lines
        assert any("Push notification transaction completed" in l
                   for l in lines), lines
        m = msproto.Client(stack.p("mstored.sock"), user=user)
        assert len(m.fetch_meta("INBOX")) == 1
        m.close()
