"""mstore verify / dump / repair on stores damaged on purpose.

Each damage is checked for: the right exit status, a problem line naming
the copy, segment:offset, record type and failed check, the same in
--json, and (where a good copy exists) that repair makes verify clean."""
import json
import os
import re
import shutil

import pytest


def make_store(mstore, tmp_path, nfiles=5, size=3000):
    store = tmp_path / "store"
    mstore("init", store, check=0)
    files = []
    for i in range(nfiles):
        f = tmp_path / f"msg{i}.eml"
        # incompressible enough to keep sizes predictable
        f.write_bytes(os.urandom(size))
        files.append(f)
    out = mstore("append", store, *files, check=0).stdout
    positions = [tuple(map(int, m.groups()))
                 for m in re.finditer(r": (\d+):(\d+) seq=", out)]
    assert len(positions) == nfiles
    return store, files, positions


def seg_file(store, copy, seg):
    return store / copy / "log" / f"{seg:012d}.seg"


def flip(path, off, mask=0x20):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)[0]
        f.seek(off)
        f.write(bytes([b ^ mask]))


def problems(mstore, store):
    p = mstore("verify", store, "--json")
    doc = json.loads(p.stdout)
    return p.returncode, doc


def test_clean_store(mstore, tmp_path):
    store, _, _ = make_store(mstore, tmp_path)
    p = mstore("verify", store, check=0)
    assert "verify: clean" in p.stdout
    rc, doc = problems(mstore, store)
    assert rc == 0 and doc["clean"] is True and doc["problems"] == []
    assert [c["records"] for c in doc["copies"]] == [5, 5]


def test_payload_flip_on_one_copy(mstore, tmp_path):
    store, _, pos = make_store(mstore, tmp_path)
    seg, off = pos[2]
    flip(seg_file(store, "secondary", seg), off + 32 + 100)
    p = mstore("verify", store, check=1)
    line = f"PROBLEM copy=secondary segment={seg} offset={off} type=body check=checksum"
    assert line in p.stdout, p.stdout
    rc, doc = problems(mstore, store)
    assert rc == 1
    kinds = {(x["copy"], x["segment"], x["offset"], x["type"], x["check"])
             for x in doc["problems"]}
    assert ("secondary", seg, off, "body", "checksum") in kinds
    # repair rewrites it from the primary; verify is clean after
    r = mstore("repair", store, check=0)
    assert "event=recover.ranges_rewritten copy=secondary" in r.stderr \
        and "source=primary" in r.stderr, r.stderr
    mstore("verify", store, check=0)


def test_flip_on_both_copies_is_unrepairable(mstore, tmp_path):
    store, _, pos = make_store(mstore, tmp_path)
    seg, off = pos[1]
    flip(seg_file(store, "primary", seg), off + 40)
    flip(seg_file(store, "secondary", seg), off + 41)
    p = mstore("verify", store, check=1)
    for copy in ("primary", "secondary"):
        assert f"copy={copy} segment={seg} offset={off} type=body check=checksum" in p.stdout
    r = mstore("repair", store, check=1)
    # the segment is the open one: recovery refuses to cut the
    # acknowledged records that follow the damage
    assert f"segment {seg} offset {off}: record bad on every copy" in r.stdout
    assert "refusing to cut" in r.stdout
    # nothing was cut: every later record is still on disk
    mstore("verify", store, check=1)
    # dump stops at the bad record with a clear message, exit 1
    d = mstore("dump", store, check=1)
    assert f"segment {seg} offset {off}" in d.stderr
    assert len(d.stdout.splitlines()) == 1


def test_header_damage_and_magic(mstore, tmp_path):
    store, _, pos = make_store(mstore, tmp_path)
    seg, off = pos[3]
    flip(seg_file(store, "primary", seg), off + 0, 0xff)  # record type
    flip(seg_file(store, "secondary", seg), 0, 0xff)      # segment magic
    p = mstore("verify", store, check=1)
    assert f"copy=primary segment={seg} offset={off} type=unknown check=header" in p.stdout
    assert f"copy=secondary segment={seg} offset=0 type=segment-header check=magic" in p.stdout


def test_truncated_and_absurd_length(mstore, tmp_path):
    store, _, pos = make_store(mstore, tmp_path)
    seg, off = pos[4]
    path = seg_file(store, "primary", seg)
    os.truncate(path, off + 100)
    with open(seg_file(store, "secondary", seg), "r+b") as f:
        f.seek(pos[3][1] + 4)
        f.write(b"\xff\xff\xff\xff")  # length far over the limit
    p = mstore("verify", store, check=1)
    assert f"copy=primary segment={seg} offset={off} type=body check=truncated" in p.stdout
    assert f"copy=secondary segment={seg} offset={pos[3][1]} type=unknown check=header" in p.stdout
    assert "over the limit" in p.stdout
    # both damages are on different records: repair restores everything
    mstore("repair", store, check=0)
    mstore("verify", store, check=0)


def test_missing_segment_and_copy_compare(mstore, tmp_path):
    store, _, _ = make_store(mstore, tmp_path)
    extra = tmp_path / "x.eml"
    extra.write_bytes(b"x" * 100)
    os.remove(seg_file(store, "secondary", 1))
    p = mstore("verify", store, check=1)
    assert "copy=secondary segment=1 offset=0 type=segment check=missing" in p.stdout
    mstore("repair", store, check=0)
    mstore("verify", store, check=0)


def test_usage_and_no_store(mstore, tmp_path):
    assert mstore("verify").returncode == 2
    assert mstore("verify", tmp_path / "nothing").returncode == 2
    assert mstore("verify", tmp_path, "--bogus").returncode == 2
    assert mstore("nosuchcommand").returncode == 2
    assert mstore("dump", tmp_path / "nothing").returncode == 2


def test_dump_lines(mstore, tmp_path):
    store, files, pos = make_store(mstore, tmp_path, nfiles=3, size=500)
    d = mstore("dump", store, check=0).stdout.splitlines()
    assert len(d) == 3
    for line, (seg, off), f in zip(d, pos, files):
        assert line.startswith(f"{seg:012d}:{off} ")
        assert "type=body" in line
        assert f"plain={f.stat().st_size}" in line
    d2 = mstore("dump", store, "--from", f"{pos[1][0]}:{pos[1][1]}",
                "--count", "1", check=0).stdout.splitlines()
    assert len(d2) == 1 and d2[0] == d[1]
    assert mstore("dump", store, "--from", "x:1").returncode == 2


def test_zero_tails_and_against(mstore, tmp_path):
    """Zeros past the last record of a segment file are a running writer's
    prepared space (docs/format.md): verify reads them as the end of the
    records, and neither the copies' comparison nor --against counts
    them.  Any other byte there is damage.  mstore.meta is compared to
    its last byte."""
    store, _, _ = make_store(mstore, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(store, other)
    p = mstore("verify", store, "--no-index", "--against", other, check=0)
    assert "byte-identical" in p.stdout
    seg = seg_file(store, "primary", 1)
    with open(seg, "ab") as f:
        f.write(bytes(1 << 20))
    p = mstore("verify", store, "--no-index", "--against", other, check=0)
    assert "verify: clean" in p.stdout and "byte-identical" in p.stdout
    # one byte that is not zero, past a MiB of zeros
    with open(seg, "ab") as f:
        f.write(b"\x01")
    p = mstore("verify", store, "--no-index", "--against", other, check=1)
    assert "copy=primary segment=1" in p.stdout
    assert "check=copies-differ" in p.stdout
    assert "type=against check=differs" in p.stdout
    # the store's identity: zeros at its end are a difference
    os.truncate(seg, os.path.getsize(seg) - 1 - (1 << 20))
    mstore("verify", store, "--no-index", "--against", other, check=0)
    with open(other / "primary" / "mstore.meta", "ab") as f:
        f.write(bytes(16))
    p = mstore("verify", store, "--no-index", "--against", other)
    assert p.returncode != 0
    assert "type=against check=meta" in p.stdout
