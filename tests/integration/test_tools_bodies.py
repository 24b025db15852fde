"""Bodies through the whole engine: mstore append (BODY records: LZ4 when
it helps, sealed with an at-rest key) and mstore cat (read back through
the log, every check) give back the exact bytes; damage and wrong keys
are refused cleanly."""
import os
import re
import subprocess

from conftest import prog


def positions(out):
    return [f"{a}:{b}" for a, b in re.findall(r": (\d+):(\d+) seq=", out)]


def test_round_trip_plain_and_lz4(mstore, tmp_path):
    store = tmp_path / "s"
    mstore("init", store, check=0)
    bodies = {
        "empty": b"",
        "one": b"x",
        "text": b"Subject: hi\r\n\r\n" + b"hello world\r\n" * 5000,
        "binary": os.urandom(200_000),
        "nul": b"\0" * 10 + b"a\0b",
    }
    files = []
    for name, data in bodies.items():
        f = tmp_path / name
        f.write_bytes(data)
        files.append(f)
    out = mstore("append", store, *files, check=0).stdout
    pos = positions(out)
    assert len(pos) == len(files)
    dump = mstore("dump", store, check=0).stdout.splitlines()
    assert "lz4" in dump[2] and "lz4" not in dump[3]  # text vs random
    for f, p in zip(files, pos):
        assert _cat_bytes(store, p) == f.read_bytes()


def _cat_bytes(store, p, *extra):
    r = subprocess.run([prog("mstore"), "cat", str(store), p, *map(str, extra)],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_sealed_bodies(mstore, tmp_path):
    store = tmp_path / "s"
    key = tmp_path / "keys" / "atrest.key"
    key.parent.mkdir()
    mstore("keygen", key, check=0)
    assert (key.stat().st_mode & 0o777) == 0o600
    assert mstore("keygen", key).returncode == 2  # never overwrites
    mstore("init", store, check=0)
    data = b"secret message body\r\n" * 1000
    f = tmp_path / "m"
    f.write_bytes(data)
    plain_pos = positions(mstore("append", store, f, check=0).stdout)[0]
    sealed_pos = positions(
        mstore("append", store, "--key", key, f, check=0).stdout)[0]
    line = [l for l in mstore("dump", store, check=0).stdout.splitlines()
            if l.startswith(f"{int(sealed_pos.split(':')[0]):012d}:"
                            f"{sealed_pos.split(':')[1]} ")][0]
    assert "sealed" in line and "lz4" in line
    assert _cat_bytes(store, sealed_pos, "--key", key) == data
    # in a store holding only sealed bodies, the plaintext is on no disk
    only = tmp_path / "only"
    mstore("init", only, check=0)
    mstore("append", only, "--key", key, f, check=0)
    for copy in ("primary", "secondary"):
        raw = b"".join(p.read_bytes()
                       for p in (only / copy / "log").glob("*.seg"))
        assert b"secret message" not in raw
    # without the key: a clear refusal
    r = mstore("cat", store, sealed_pos)
    assert r.returncode == 1 and "no at-rest key" in r.stderr
    # with another key: authentication fails
    other = tmp_path / "keys" / "other.key"
    mstore("keygen", other, check=0)
    r = mstore("cat", store, sealed_pos, "--key", other)
    assert r.returncode == 1 and "authentic" in r.stderr.lower(), r.stderr
    # a store that turned sealing on still reads its old unsealed bodies
    assert _cat_bytes(store, plain_pos, "--key", key) == data
    # a key file readable by others is refused
    os.chmod(key, 0o644)
    r = mstore("cat", store, sealed_pos, "--key", key)
    assert r.returncode == 2 and str(key) in r.stderr


def test_cat_refuses_damage(mstore, tmp_path):
    store = tmp_path / "s"
    mstore("init", store, check=0)
    f = tmp_path / "m"
    f.write_bytes(os.urandom(5000))
    p = positions(mstore("append", store, f, f, check=0).stdout)
    seg, off = map(int, p[0].split(":"))
    for copy in ("primary", "secondary"):
        path = store / copy / "log" / f"{seg:012d}.seg"
        with open(path, "r+b") as fh:
            fh.seek(off + 200)
            b = fh.read(1)
            fh.seek(off + 200)
            fh.write(bytes([b[0] ^ 1]))
    r = mstore("cat", store, p[0])
    assert r.returncode == 1
    assert f"segment {seg} offset {off}" in r.stderr
    assert r.stdout == ""
    # the record after the damage is still readable, checked on its own
    assert _cat_bytes(store, p[1]) == f.read_bytes()
    assert mstore("cat", store, "1:12345").returncode != 0
    assert mstore("cat", store, "garbage").returncode == 2
