"""Dovecot's imap_sieve (Pigeonhole's IMAPSIEVE) over mstore, as sites
train spam filters with it: a Sieve script runs on each message a
client COPYs, MOVEs or APPENDs into Junk, and what it does to the
message's flags is what the store keeps.  A COPY and a MOVE are the
store's own copies (one body); Pigeonhole changes the copies' flags
after they are saved, which reaches the store as any client's STORE
does, and leaves the source as it was."""
import re

import pytest

import msproto
from test_dovecot_imap import MSG, ok, raw

SEEN = 1 << 0
SCRIPT = """require ["imap4flags"];
addflag "$JunkTrained";
removeflag "\\\\Flagged";
addflag "\\\\Seen";
"""


def msg(s):
    return MSG.replace(b"hello", s.encode())


@pytest.mark.dovecot(imapsieve=SCRIPT)
def test_imapsieve_flags_reach_the_store(stack):
    m = msproto.Client(stack.p("mstored.sock"), user="alice")
    c = stack.imap()
    ok(c.create("Junk"))
    ok(c.append("INBOX", r"(\Flagged $Work)", None, msg("c")))
    ok(c.append("INBOX", None, None, msg("m")))
    ok(c.select("INBOX"))
    line, _ = raw(c, "UID COPY 1 Junk")
    assert b" OK " in line, line
    line, _ = raw(c, "UID MOVE 2 Junk")
    assert b" OK " in line, line
    ok(c.append("Junk", None, None, msg("a")))
    junk = m.fetch_meta("Junk")
    assert len(junk) == 3
    for r in junk:
        assert sorted(r["keywords"]) == sorted(
            ["$JunkTrained"] + (["$Work"] if r["uid"] == 1 else [])), r
        assert r["flags"] == SEEN, r
    # the source of the COPY is as it was
    src = m.fetch_meta("INBOX")
    assert [r["uid"] for r in src] == [1]
    assert src[0]["keywords"] == ["$Work"] and src[0]["flags"] & (1 << 2)
    # the bodies are the originals, and IMAP shows what the store has
    bodies = sorted(m.fetch_body("Junk", r["uid"]) for r in junk)
    assert bodies == sorted([msg("c"), msg("m"), msg("a")])
    ok(c.select("Junk"))
    data = ok(c.fetch("1:*", "(UID FLAGS)"))
    for d in data:
        flags = re.search(rb"FLAGS \(([^)]*)\)", d).group(1).split()
        assert b"$JunkTrained" in flags and b"\\Seen" in flags and \
            b"\\Flagged" not in flags, d
    c.logout()
    m.close()
