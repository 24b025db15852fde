"""mstore -c mstore.conf: the [store] section names the copies (relative
to the config file), the engine and the key; bad files are refused with
the line and key that is wrong."""
import os


def write_conf(tmp_path, text):
    conf = tmp_path / "etc" / "mstore.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(text)
    return conf


def test_store_from_config(mstore, tmp_path):
    (tmp_path / "data").mkdir()
    conf = write_conf(tmp_path, """
# the store of this test
[store]
primary = ../data/primary
secondary = ../data/secondary
segment_size = 1M
io_engine = psync

[lmtp]
# another daemon's section is left alone
listen = 127.0.0.1:2424
""")
    mstore("-c", conf, "init", check=0)
    assert (tmp_path / "data" / "primary" / "mstore.meta").exists()
    assert (tmp_path / "data" / "secondary" / "mstore.meta").exists()
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    out = mstore("-c", conf, "append", msg, check=0).stdout
    pos = out.split(": ")[1].split()[0]
    mstore("-c", conf, "verify", check=0)
    r = mstore("-c", conf, "cat", pos, check=0)
    assert r.stdout == msg.read_text()
    dump = mstore("-c", conf, "config", check=0).stdout
    assert "segment_size = 1M" in dump and "io_engine = psync" in dump
    assert str(tmp_path / "etc" / ".." / "data" / "primary") in dump


def test_bad_configs(mstore, tmp_path):
    cases = [
        ("[store]\nprimary = a\nsecondary = a\n", "same directory"),
        ("[store]\nprimary = a\n", "needs both"),
        ("[store]\nprimary = a\nsecondary = b\nsegment_size = 5G\n",
         "line 4"),
        ("[store]\nprimary = a\nsecondary = b\nio_engine = aio\n",
         "io_engine"),
        ("[store]\nprimary = a\nsecondary = b\nsegmentsize = 1M\n",
         "segmentsize"),
        ("[stor]\nprimary = a\n", "stor"),
        ("[store]\nprimary a\n", "line 2"),
        ("[store]\nprimary = a\x00\nsecondary = b\n", "NUL"),
    ]
    for i, (text, want) in enumerate(cases):
        conf = write_conf(tmp_path, text)
        r = mstore("-c", conf, "verify")
        assert r.returncode == 2, (i, r.stdout, r.stderr)
        assert want in r.stderr, (i, r.stderr)
    r = mstore("-c", tmp_path / "missing.conf", "verify")
    assert r.returncode == 2 and "missing.conf" in r.stderr
    # a line of 100 KB is refused, not buffered
    conf = write_conf(tmp_path, "[store]\nprimary = " + "a" * 100_000 + "\n")
    r = mstore("-c", conf, "verify")
    assert r.returncode == 2 and "line 2" in r.stderr
