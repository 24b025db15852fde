"""A committed store (tests/data/golden, written by tests/data/mkgolden.c
with a fixed store id, salt and times) holding one record of most types
(an undelete PLACE, an EXPUNGE with its time and a PURGE among them): its
dump must equal golden.dump.ref byte for byte, verify must find it clean,
and its body must read back.  A format change that breaks old stores
fails here; regenerate only on purpose and review the .ref diff."""
import os
import subprocess

from conftest import prog

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


def test_dump_matches_reference(mstore):
    store = os.path.join(DATA, "golden")
    got = mstore("dump", store, check=0).stdout
    with open(os.path.join(DATA, "golden.dump.ref")) as f:
        assert got == f.read()


def test_golden_verifies_and_reads(mstore):
    store = os.path.join(DATA, "golden")
    mstore("verify", store, check=0)
    body = subprocess.run([prog("mstore"), "cat", store, "1:278"],
                          capture_output=True, check=True).stdout
    assert body.startswith(b"From: a@example.test\r\n")
    assert body.count(b"The same line again.\r\n") == 5


def test_offline_stats_reads_only(mstore):
    store = os.path.join(DATA, "golden")
    out = mstore("stats", store, check=0).stdout
    stats = dict(l.split(" ", 1) for l in out.splitlines())
    assert stats["log.records.place"] == "2"  # one of them an undelete
    assert stats["log.records.expunge"] == "1"
    assert stats["log.records.purge"] == "1"
    assert stats["log.records.seal"] == "1"
    assert stats["log.durable_seq"] == "17"
    assert stats["index.unavailable"].startswith("no index")
    # looking created nothing in the committed store
    assert not os.path.exists(os.path.join(store, "primary", "index"))
