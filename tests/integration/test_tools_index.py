"""mstore verify checks the index against the log (its own invariants,
then its dump against a rebuild from the log alone); mstore reindex
rebuilds it offline, and refuses while mstored holds the store."""

from conftest import prog, run_sh



def test_index_against_log(mstore, tmp_path):
    var = tmp_path / "var"
    try:
        r = run_sh("start", var=var)
        assert r.returncode == 0, r.stdout + r.stderr
        conf = var / "mstore.conf"
        # the daemon holds the store: no offline rebuild under it
        busy = mstore("-c", conf, "reindex")
        assert busy.returncode == 2 and "in use" in busy.stderr
    finally:
        run_sh("stop", var=var)
    v = mstore("-c", conf, "verify", check=0)
    assert "verify: clean" in v.stdout and "not checked" not in v.stdout
    # a body written behind the index's back: the index no longer
    # describes the log, and verify says so
    extra = tmp_path / "extra.eml"
    extra.write_bytes(b"Subject: behind the index\r\n\r\nx\r\n")
    mstore("-c", conf, "append", extra, check=0)
    v = mstore("-c", conf, "verify", "--json")
    assert v.returncode == 1, v.stdout
    assert '"type":"index"' in v.stdout and "differs from a rebuild" in v.stdout
    assert mstore("-c", conf, "verify", "--no-index").returncode == 0
    # reindex makes them agree again
    mstore("-c", conf, "reindex", check=0)
    mstore("-c", conf, "verify", check=0)
    # a damaged index file is reported, not trusted
    data = var / "store" / "index" / "data.mdb"
    raw = bytearray(data.read_bytes())
    # past the two meta pages, one byte in every 64 (a page's free
    # middle holds nothing, so sparser damage may hit nothing live)
    for off in range(4096 * 2, len(raw), 64):
        raw[off] ^= 0x5A
    data.write_bytes(bytes(raw))
    v = mstore("-c", conf, "verify")
    assert v.returncode == 1, v.stdout
    assert "check=index" in v.stdout
