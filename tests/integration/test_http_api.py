"""mstored's system API (docs/http-api.md): /metrics checked line by line
against the Prometheus text format 0.0.4, /status as JSON, the admin
endpoints with no, wrong and right token (through the ops layer: a 201 is
durable), and hostile HTTP (huge head, bad request line, NUL, large
body, chunked, slow senders) answered with the right status or a closed
connection while the daemon keeps serving."""
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import prog, run

TOKEN = "s3cret-token-0123456789abcdef"


class Daemon:
    def __init__(self, tmp_path, token=True, extra="", loop=None):
        self.dir = tmp_path
        self.env = dict(os.environ)
        if loop:
            self.env["MSTORE_LOOP"] = loop
        (tmp_path / "store").mkdir(exist_ok=True)
        self.conf = tmp_path / "mstore.conf"
        self.logf = tmp_path / "mstored.log"
        lines = ["[store]", "primary = store/primary",
                 "secondary = store/secondary", "index = store/index",
                 "io_engine = psync", "socket = u.sock",
                 "admin_socket = a.sock", "http = 127.0.0.1:0",
                 "http_timeout = 1s", "http_quota_users = 3"]
        if token:
            tf = tmp_path / "token"
            tf.write_text(TOKEN + "\n")
            os.chmod(tf, 0o600)
            lines.append("http_token_file = token")
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc = None
        self.port = None

    def start(self):
        logged = self.logf.stat().st_size if self.logf.exists() else 0
        self.out = open(self.logf, "ab")
        self.proc = subprocess.Popen([prog("mstored"), "-c", str(self.conf)],
                                     stdout=self.out, stderr=self.out,
                                     env=self.env)
        deadline = time.time() + 20
        while time.time() < deadline:
            text = self.logf.read_bytes()[logged:].decode(errors="replace")
            m = re.search(r"event=http.listening port=(\d+)", text)
            if m and "event=ready " in text:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError("mstored exited:\n" + text)
            time.sleep(0.05)
        raise AssertionError("mstored did not get ready")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if self.proc:
            self.out.close()
        self.proc = None

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def req(self, method, path, body=None, token=TOKEN, ctype=True,
            conn=None):
        c = conn or self.conn()
        headers = {}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            if ctype:
                headers["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data, r

    def raw(self, data, wait=5.0):
        """Send raw bytes; return (everything read until close or
        timeout, whether the server closed)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=wait)
        try:
            s.sendall(data)
        except OSError:
            pass
        got = b""
        closed = False
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    closed = True
                    break
                got += b
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        s.close()
        return got, closed


@pytest.fixture(params=["epoll", "uring"])
def daemon(tmp_path, request):
    """mstored with the API on, on each network loop (uring falls back to
    epoll, with a warning, where io_uring is refused)."""
    d = Daemon(tmp_path, loop=request.param)
    d.start()
    yield d
    d.stop()


# ---- a strict checker of the Prometheus text format 0.0.4 -------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
LVALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
FLOAT = r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|Inf|NaN)"
SAMPLE = re.compile(rf"^({NAME})(\{{(?:{LABEL}={LVALUE}(?:,{LABEL}={LVALUE})*,?)?\}})?"
                    rf" ({FLOAT})(?: -?\d+)?$")
HELP = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")
LABELS = re.compile(rf"({LABEL})=({LVALUE})")


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n"
                  else m.group(1), v[1:-1])


def parse_metrics(text):
    """Every line must be HELP, TYPE or a sample; families contiguous,
    TYPE before samples, no series twice, histograms well formed.
    Returns {(name, frozenset(labels)): value} and {family: type}."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types, helps, samples = {}, set(), {}
    seen_families, current = set(), None
    hist = {}

    def family(name):
        for suf in ("_bucket", "_sum", "_count"):
            base = name[:-len(suf)] if name.endswith(suf) else None
            if base and types.get(base) in ("histogram", "summary"):
                return base
        return name

    for i, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {i}: {line!r}"
        assert line != "", f"{where}: empty line"
        m = HELP.match(line)
        if m:
            assert m.group(1) not in helps, f"{where}: HELP twice"
            assert "\\" not in m.group(2).replace("\\\\", "").replace("\\n", ""), where
            helps.add(m.group(1))
            continue
        m = TYPE.match(line)
        if m:
            n = m.group(1)
            assert n not in types, f"{where}: TYPE twice"
            assert n not in seen_families, f"{where}: TYPE after samples"
            types[n] = m.group(2)
            continue
        assert not line.startswith("#"), f"{where}: a stray comment"
        m = SAMPLE.match(line)
        assert m, f"{where}: not a sample line"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        lab = {k: unescape(v) for k, v in LABELS.findall(labels)}
        assert len(lab) == len(LABELS.findall(labels)), f"{where}: label twice"
        fam = family(name)
        if fam != current:
            assert fam not in seen_families, f"{where}: family {fam} split"
            seen_families.add(fam)
            current = fam
        key = (name, frozenset(lab.items()))
        assert key not in samples, f"{where}: series twice"
        v = float(value.replace("Inf", "inf"))
        samples[key] = v
        if types.get(fam) == "histogram":
            h = hist.setdefault(fam, {"buckets": [], "sum": None, "count": None})
            if name == fam + "_bucket":
                assert "le" in lab, f"{where}: bucket without le"
                h["buckets"].append((float(lab["le"].replace("Inf", "inf")), v))
            elif name == fam + "_sum":
                h["sum"] = v
            elif name == fam + "_count":
                h["count"] = v
            else:
                raise AssertionError(f"{where}: not a histogram sample")
        elif types.get(fam) == "counter":
            assert v >= 0, f"{where}: negative counter"
    for fam, h in hist.items():
        les = [le for le, _ in h["buckets"]]
        assert les == sorted(les) and les[-1] == math.inf, fam
        counts = [c for _, c in h["buckets"]]
        assert counts == sorted(counts), f"{fam}: buckets not cumulative"
        assert h["count"] == counts[-1] and h["sum"] is not None, fam
    return samples, types


def val(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_prometheus_checker_refuses_bad_text():
    good = "# HELP a x\n# TYPE a counter\na 1\n"
    parse_metrics(good)
    for bad in ["a 1", "a{b=\"c} 1\n", "a{b=\"c\"} x\n", "a 1\n\n",
                "# TYPE a counter\n# TYPE a gauge\na 1\n",
                "a 1\nb 2\na{x=\"1\"} 3\n", "a 1\na 2\n", "1a 2\n"]:
        with pytest.raises(AssertionError):
            parse_metrics(bad)


# ---- the endpoints -----------------------------------------------------


def deliver(conf, user, data, tmp_path):
    f = tmp_path / "msg.eml"
    f.write_bytes(data)
    run(prog("mstore"), "-c", conf, "deliver", user, "INBOX", f, check=0)


def test_metrics_and_status(daemon, tmp_path):
    st, body, _ = daemon.req("POST", "/admin/users", {"name": "alice"})
    assert st == 201, body
    # names that need escaping, in JSON and in label values
    odd = 'o"d\\d é'
    st, body, _ = daemon.req("POST", "/admin/users", {"name": odd})
    assert st == 201, body
    for _ in range(3):
        deliver(daemon.conf, "alice", b"Subject: m\r\n\r\nhello\r\n", tmp_path)
    st, body, r = daemon.req("GET", "/metrics", token=None)
    assert st == 200
    assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    samples, types = parse_metrics(body.decode())
    assert val(samples, "mstore_copy_up", copy="primary") == 1
    assert val(samples, "mstore_copy_up", copy="secondary") == 1
    assert val(samples, "mstore_log_degraded") == 0
    assert val(samples, "mstore_users") == 2
    assert val(samples, "mstore_messages") == 3
    assert val(samples, "mstore_requests_total", op="append") == 3
    assert val(samples, "mstore_requests_total", op="user-create") == 2
    assert val(samples, "mstore_request_errors_total", op="append") == 0
    assert val(samples, "mstore_log_appends_total") >= 7
    assert types["mstore_log_flush_duration_seconds"] == "histogram"
    n = val(samples, "mstore_log_flush_duration_seconds_count")
    assert n >= 1 and n == val(samples, "mstore_log_flushes_total")
    assert val(samples, "mstore_log_flush_records_count") == n
    assert val(samples, "mstore_log_flush_records_sum") == \
        val(samples, "mstore_log_appends_total")
    assert val(samples, "mstore_quota_used_messages", user="alice") == 3
    assert val(samples, "mstore_quota_used_messages", user=odd) == 0
    assert val(samples, "mstore_quota_users_truncated") == 0
    for t, v in types.items():
        if v == "counter":
            assert t.endswith("_total"), t
    # replication, with no udsync: disconnected, everything unshipped
    assert val(samples, "mstore_replication_sync_mode") == 0
    assert val(samples, "mstore_replication_standby") == 0
    assert val(samples, "mstore_replication_connected") == 0
    assert [s for s in ("disconnected", "catching_up", "streaming",
                        "degraded")
            if val(samples, "mstore_replication_state", state=s) == 1] \
        == ["disconnected"]
    assert val(samples, "mstore_replication_acked_seq") == 0
    assert val(samples, "mstore_replication_lag_records") == \
        val(samples, "mstore_log_durable_seq")
    assert val(samples, "mstore_replication_lag_bytes") > 0
    assert val(samples, "mstore_replication_lag_seconds") >= 0
    assert types["mstore_replication_sync_refused_total"] == "counter"
    # every repl.* counter of STATUS has a name of its own, and the
    # requests by op (ops.op.* in STATUS) are mstore_requests_total's
    assert not [k for k in samples if k[0] == "mstore_status_counter" and
                dict(k[1])["name"].startswith(("repl.", "ops.op."))]

    st, body, r = daemon.req("GET", "/status", token=None)
    assert st == 200 and r.getheader("Content-Type") == "application/json"
    s = json.loads(body)
    assert [c["name"] for c in s["copies"]] == ["primary", "secondary"]
    assert all(c["state"] == "ok" and c["error"] == "" for c in s["copies"])
    assert s["copies"][0]["dir"].endswith("store/primary")
    assert s["engine"] == "psync" and s["loop"]
    assert s["degraded"] is False and s["dead"] is False
    assert s["segments"]["count"] >= 1
    assert s["segments"]["head"] >= s["segments"]["first"]
    assert s["durable"]["seq"] == s["index"]["applied"]["seq"] > 0
    assert s["index"]["users"] == 2 and s["index"]["messages"] == 3
    assert s["counters"]["ops.appends"] == 3
    assert s["uptime_seconds"] >= 0 and s["timeline"] >= 1

    # more users than http_quota_users (3): the series are cut, and say so
    for u in ("u3", "u4"):
        assert daemon.req("POST", "/admin/users", {"name": u})[0] == 201
    samples, _ = parse_metrics(daemon.req("GET", "/metrics")[1].decode())
    assert len([k for k in samples if k[0] == "mstore_quota_used_bytes"]) == 3
    assert val(samples, "mstore_quota_users_truncated") == 1
    assert daemon.req("POST", "/metrics", b"{}")[0] == 405


def test_admin_endpoints(daemon):
    body = {"name": "bob"}
    assert daemon.req("POST", "/admin/users", body, token=None)[0] == 401
    st, _, r = daemon.req("POST", "/admin/users", body, token="wrong")
    assert st == 401 and r.getheader("WWW-Authenticate").startswith("Bearer")
    assert daemon.req("POST", "/admin/users", body, token=TOKEN + "x")[0] == 401
    assert daemon.req("POST", "/admin/users", body, token=TOKEN[:-1])[0] == 401
    assert daemon.req("GET", "/admin/users", token="")[0] == 401
    st, data, _ = daemon.req("POST", "/admin/users", body)
    assert st == 201 and json.loads(data)["name"] == "bob"
    assert daemon.req("POST", "/admin/users", body)[0] == 409
    st, data, _ = daemon.req("GET", "/admin/users")
    assert [u["name"] for u in json.loads(data)["users"]] == ["bob"]
    # strict bodies
    for bad in [b"", b"[]", b'{"name":1}', b'{"name":"x","x":1}',
                b'{"name":"x",}', b'{"name":"x"} x', b'{"name":true}',
                b'{"name":"a\\u0000b"}', b'{"name":"\xff"}',
                b'{"name":"x","name":"y"}', b'{"name":"bad\\nname"}']:
        st, data, _ = daemon.req("POST", "/admin/users", bad)
        assert st == 400, (bad, st, data)
        assert "error" in json.loads(data)
    # no Content-Type is taken as JSON; another one is refused
    st, data, _ = daemon.req("POST", "/admin/users", b'{"name":"carol"}',
                             ctype=False)
    assert st == 201
    c = daemon.conn()
    c.request("POST", "/admin/users", body=b'{"name":"dave"}',
              headers={"Authorization": "Bearer " + TOKEN,
                       "Content-Type": "application/x-www-form-urlencoded"})
    assert c.getresponse().status == 415
    c.close()
    # the list by pages: after the last id of a page, until an empty one
    st, data, _ = daemon.req("GET", "/admin/users?limit=1")
    page = json.loads(data)
    assert st == 200 and [u["name"] for u in page["users"]] == ["bob"]
    st, data, _ = daemon.req(
        "GET", "/admin/users?limit=1&after=%d" % page["next_after"])
    page = json.loads(data)
    assert [u["name"] for u in page["users"]] == ["carol"]
    st, data, _ = daemon.req("GET",
                             "/admin/users?after=%d" % page["next_after"])
    assert st == 200 and json.loads(data) == {"users": []}
    for bad in ["limit=0", "limit=10001", "after=", "after=x", "after=-1",
                "after=1&x=2", "after=99999999999999999999", "x", "&"]:
        st, data, _ = daemon.req("GET", "/admin/users?" + bad)
        assert st == 400 and "error" in json.loads(data), bad
    # quota
    q = {"max_bytes": 5000, "max_messages": 7}
    assert daemon.req("PUT", "/admin/quota/bob", q)[0] == 200
    st, data, _ = daemon.req("GET", "/admin/quota/bob")
    got = json.loads(data)
    assert (got["max_bytes"], got["max_messages"]) == (5000, 7)
    # bob's INBOX, and the store's max_mailboxes (the default)
    assert (got["mailboxes"], got["max_mailboxes"]) == (1, 10000), got
    assert daemon.req("PUT", "/admin/quota/bob", {"max_bytes": -1,
                                                  "max_messages": 0})[0] == 400
    assert daemon.req("PUT", "/admin/quota/bob", {"max_bytes": 1})[0] == 400
    assert daemon.req("PUT", "/admin/quota/nobody", q)[0] == 404
    # undelete
    st, data, _ = daemon.req("POST", "/admin/undelete",
                             {"user": "bob", "mailbox": "INBOX", "since": 0})
    assert st == 200 and json.loads(data)["restored"] == []
    assert daemon.req("POST", "/admin/undelete",
                      {"user": "bob", "mailbox": "Nope"})[0] == 404
    # delete; percent-encoded names
    assert daemon.req("DELETE", "/admin/users/bob")[0] == 200
    assert daemon.req("DELETE", "/admin/users/bob")[0] == 404
    assert daemon.req("POST", "/admin/users", {"name": "a b/c"})[0] == 201
    assert daemon.req("DELETE", "/admin/users/a%20b%2Fc")[0] == 200
    assert daemon.req("DELETE", "/admin/users/a%2")[0] == 400
    assert daemon.req("DELETE", "/admin/users/x%00")[0] == 400
    assert daemon.req("GET", "/admin/nothing")[0] == 404
    assert daemon.req("PATCH", "/admin/users")[0] == 405
    assert daemon.req("GET", "/nothing", token=None)[0] == 404


def test_admin_reply_is_durable(daemon):
    """A 201 means the records are durable: kill -9 right after it and
    the user is there after a restart."""
    for i in range(5):
        assert daemon.req("POST", "/admin/users", {"name": f"k{i}"})[0] == 201
    daemon.stop(signal.SIGKILL)
    daemon.start()
    st, data, _ = daemon.req("GET", "/admin/users")
    names = {u["name"] for u in json.loads(data)["users"]}
    assert names == {f"k{i}" for i in range(5)}


def test_no_token_file_means_403(tmp_path):
    d = Daemon(tmp_path, token=False)
    d.start()
    try:
        assert d.req("GET", "/admin/users")[0] == 403
        assert d.req("GET", "/admin/users", token=None)[0] == 403
        assert d.req("GET", "/status", token=None)[0] == 200
    finally:
        d.stop()


def test_token_file_checks(tmp_path):
    d = Daemon(tmp_path)
    tf = tmp_path / "token"
    os.chmod(tf, 0o644)
    p = run(prog("mstored"), "-c", d.conf)
    assert p.returncode == 1 and "0600" in p.stderr
    os.chmod(tf, 0o600)
    tf.write_text("short\n")
    p = run(prog("mstored"), "-c", d.conf)
    assert p.returncode == 1 and "token" in p.stderr
    tf.write_text(TOKEN + "\n")
    bad = tmp_path / "bad.conf"
    bad.write_text(d.conf.read_text().replace("http = 127.0.0.1:0",
                                              "http = 0.0.0.0:0"))
    p = run(prog("mstored"), "-c", bad, "-t")
    assert p.returncode == 1 and "loopback" in p.stderr


def status_of(resp):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", resp)
    return int(m.group(1)) if m else None


def test_keep_alive_and_pipelining(daemon):
    c = daemon.conn()
    for _ in range(3):
        st, data, r = daemon.req("GET", "/status", token=None, conn=c)
        assert st == 200 and r.getheader("Connection") == "keep-alive"
    c.close()
    two = (b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got, closed = daemon.raw(two)
    assert closed
    codes = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)
    assert codes == [b"200", b"404"]
    got, closed = daemon.raw(b"GET /status HTTP/1.0\r\n\r\n")
    assert status_of(got) == 200 and closed and b"Connection: close" in got


MALFORMED = [
    (b"GET /status HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET status HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /status HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /status HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 400),
    (b"GET /st\0atus HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /status HTTP/1.1\nHost: x\n\n", 400),
    (b"GET /status HTTP/1.1\r\n\r\n", 400),
    (b"GET /status HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /status HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"POST /admin/users HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", 413),
    (b"POST /admin/users HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
     b"Content-Length: 1\r\n\r\nx", 400),
    (b"POST /admin/users HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /admin/users HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    (b"POST /admin/users HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
]


@pytest.mark.parametrize("data,code", MALFORMED,
                         ids=[f"{i}-{c}" for i, (_, c) in enumerate(MALFORMED)])
def test_malformed_http(daemon, data, code):
    got, closed = daemon.raw(data)
    assert status_of(got) == code, got[:200]
    assert closed, "a refused request closes the connection"
    assert b"Connection: close" in got
    # and the daemon goes on serving
    assert daemon.req("GET", "/status", token=None)[0] == 200


def test_slow_and_idle_clients_are_closed(daemon):
    # slowloris: a byte every 0.2 s, never a whole head (http_timeout 1s)
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    t0 = time.time()
    closed = False
    for ch in b"GET /status HTTP/1.1\r\nX-Slow: " + b"a" * 100:
        try:
            s.sendall(bytes([ch]))
            s.settimeout(0.2)
            if s.recv(100) == b"":
                closed = True
                break
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
    s.close()
    assert closed and time.time() - t0 < 6
    # an idle keep-alive connection goes too
    c = daemon.conn()
    assert daemon.req("GET", "/status", token=None, conn=c)[0] == 200
    time.sleep(2.5)
    s = c.sock
    s.settimeout(2)
    assert s.recv(10) == b""
    c.close()
    assert daemon.req("GET", "/status", token=None)[0] == 200


def test_connection_limit(tmp_path):
    d = Daemon(tmp_path, extra="http_max_connections = 2\n")
    d.start()
    try:
        held = [socket.create_connection(("127.0.0.1", d.port))
                for _ in range(2)]
        time.sleep(0.2)
        got, closed = d.raw(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got == b"" and closed
        for s in held:
            s.close()
        time.sleep(0.3)
        assert d.req("GET", "/status", token=None)[0] == 200
    finally:
        d.stop()


def test_mstore_status(daemon, mstore):
    daemon.req("POST", "/admin/users", {"name": "erin"})
    out = mstore("-c", daemon.conf, "status", check=0).stdout
    assert "primary" in out and "secondary" in out
    assert re.search(r"users\s+1", out), out
    assert "degraded" not in out.lower() or "not degraded" in out.lower()


def http_port(logfile):
    for _ in range(200):
        m = re.search(r"event=http.listening port=(\d+)",
                      logfile.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError("no system API port in " + str(logfile))


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    assert r.status == 200
    return parse_metrics(body)[0]


def state_of(samples):
    on = [s for s in ("disconnected", "catching_up", "streaming",
                      "degraded")
          if val(samples, "mstore_replication_state", state=s) == 1]
    assert len(on) == 1, on
    return on[0]


def test_replication_metrics(tmp_path):
    """A primary with udsync to a DR store (replication = sync): the
    replication metrics follow the DR site through streaming, lag while
    it is away, degraded past sync_timeout and back."""
    from replica_pair import Pair
    pair = Pair(tmp_path, extra_store="http = 127.0.0.1:0\n"
                "replication = sync\nsync_timeout = 1s\n"
                "sync_fallback = async\n")
    try:
        pair.start("mstored")
        port = http_port(pair.logs["mstored"])
        pair.start("recv")
        pair.start("send")
        assert pair.mstore("user", "add", "u1").returncode == 0
        assert pair.deliver(20, seed=1) == 20
        pair.wait_caught_up()
        m = scrape(port)
        assert state_of(m) == "streaming"
        assert val(m, "mstore_replication_sync_mode") == 1
        assert val(m, "mstore_replication_fallback_async") == 1
        assert val(m, "mstore_replication_connected") == 1
        assert val(m, "mstore_replication_degraded") == 0
        assert val(m, "mstore_replication_lag_records") == 0
        assert val(m, "mstore_replication_lag_bytes") == 0
        assert val(m, "mstore_replication_lag_seconds") == 0
        assert val(m, "mstore_replication_acked_seq") == \
            val(m, "mstore_log_durable_seq")
        assert val(m, "mstore_replication_acked_segment") >= 1
        assert val(m, "mstore_replication_acked_offset_bytes") > 0
        out = pair.mstore("status").stdout
        assert re.search(r"replication\s+sync, streaming", out), out
        assert re.search(r"DR lag\s+0 records, 0 bytes", out), out
        # the DR site goes away: writes wait sync_timeout, then go
        # async (degraded), and the lag grows in all three units
        pair.kill("recv")
        assert pair.deliver(3, seed=2) == 3
        time.sleep(0.3)
        m = scrape(port)
        assert state_of(m) == "degraded"
        assert val(m, "mstore_replication_degraded") == 1
        assert val(m, "mstore_replication_sync_timeouts_total") == 1
        assert val(m, "mstore_replication_sync_released_total") >= 1
        assert val(m, "mstore_replication_lag_records") >= 3
        assert val(m, "mstore_replication_lag_bytes") > 3 * 800
        assert val(m, "mstore_replication_lag_seconds") >= 1.0
        assert val(m, "mstore_replication_acked_seq") < \
            val(m, "mstore_log_durable_seq")
        out = pair.mstore("status").stdout
        assert "DEGRADED (acknowledging without the DR site)" in out, out
        # back: caught up, streaming, no lag
        pair.start("recv")
        pair.wait_caught_up()
        end = time.time() + 10
        while time.time() < end:
            m = scrape(port)
            if state_of(m) == "streaming":
                break
            time.sleep(0.1)
        assert state_of(m) == "streaming"
        assert val(m, "mstore_replication_degraded") == 0
        assert val(m, "mstore_replication_lag_seconds") == 0
        assert val(m, "mstore_replication_lag_records") == 0
    finally:
        pair.stop_all()


# ---- LMTP replies by code, as mstore-lmtpd reports them (LMTP_STATS) --

def lmtp_replies(d):
    st, body, _ = d.req("GET", "/metrics", token=None)
    assert st == 200
    samples, types = parse_metrics(body.decode())
    assert types["mstore_lmtp_replies_total"] == "counter"
    return {int(dict(lbl)["code"]): v for (name, lbl), v in samples.items()
            if name == "mstore_lmtp_replies_total"}, samples


def test_lmtp_replies_by_code(tmp_path):
    """mstore-lmtpd counts its replies by code and pushes them to mstored
    (op 54); /metrics shows them; a restart of mstore-lmtpd (a new
    instance) adds to them, a reconnect after mstored's restart does not
    lose the lmtpd's own; quota figures are there too."""
    import smtplib
    from lmtp_env import free_port, wait_for
    lport = free_port()
    d = Daemon(tmp_path, extra=f"[lmtp]\nlisten = 127.0.0.1:{lport}\n"
                               "domains = example.test\n")
    d.start()
    lmtpd = None
    log = open(tmp_path / "lmtpd.log", "ab")

    def start_lmtpd():
        p = subprocess.Popen([prog("mstore-lmtpd"), "-c", str(d.conf)],
                             stdout=log, stderr=log)
        try:
            wait_for(lambda: "event=store.connected" in
                     (tmp_path / "lmtpd.log").read_text(errors="replace")
                     [start_lmtpd.logged:], 10, "mstore-lmtpd")
        except BaseException:
            # not yet ours to stop in the finally below: stop it here
            p.kill()
            p.wait(timeout=30)
            raise
        return p
    start_lmtpd.logged = 0

    def stop_lmtpd(p):
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        start_lmtpd.logged = len((tmp_path / "lmtpd.log").read_text(
            errors="replace"))

    def session(rcpts):
        lm = smtplib.LMTP("127.0.0.1", lport, timeout=30)
        lm.ehlo("test")
        try:
            lm.sendmail("s@example.test", rcpts,
                        b"Subject: m\r\n\r\nhi\r\n")
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
            pass  # smtplib said RSET first
        lm.quit()

    try:
        st, _, _ = d.req("POST", "/admin/users", {"name": "alice"})
        assert st == 201
        # a small quota, so that the second message is refused (552)
        st, _, _ = d.req("PUT", "/admin/quota/alice",
                         {"max_bytes": 0, "max_messages": 1})
        assert st in (200, 204), st
        lmtpd = start_lmtpd()
        got, _ = lmtp_replies(d)
        assert got == {}
        session(["alice@example.test"])           # delivered
        session(["alice@example.test"])           # over quota
        session(["nobody@example.test"])          # 550 no such user
        # 220 greeting, LHLO, MAIL, RCPT 250, DATA 354, 250 delivered,
        # QUIT 221; 220, LHLO, MAIL 250, RCPT 552 (over quota), RSET
        # 250, 221; 220, LHLO, MAIL 250, RCPT 550, RSET 250, 221
        want = {220: 3, 250: 4 + 3 + 3, 354: 1, 221: 3, 550: 1, 552: 1}

        def settled():
            g, _ = lmtp_replies(d)
            settled.last = g
            return g == want
        try:
            wait_for(settled, 10, "the counts in /metrics")
        except AssertionError:
            raise AssertionError(f"{settled.last} != {want}")
        got, samples = lmtp_replies(d)
        assert val(samples, "mstore_lmtp_instances") == 1
        # the quota figures of the user
        assert val(samples, "mstore_quota_used_messages", user="alice") == 1
        assert val(samples, "mstore_quota_limit_bytes", user="alice") >= 0
        first = dict(got)

        # mstored restarts: the lmtpd reconnects and says it all again
        d.stop()
        d.start()
        wait_for(lambda: lmtp_replies(d)[0] == first, 15,
                 "the counts again after mstored's restart")

        # the lmtpd restarts: a new instance, counted on top
        stop_lmtpd(lmtpd)
        lmtpd = start_lmtpd()
        session(["nobody@example.test"])
        wait_for(lambda: lmtp_replies(d)[0].get(550) == 2, 10,
                 "the new instance's counts")
        got, samples = lmtp_replies(d)
        assert got[250] == first[250] + 3, got   # LHLO, MAIL, RSET
        assert got[220] == first[220] + 1, got
        assert val(samples, "mstore_lmtp_instances") == 2
        for code, n in first.items():
            assert got[code] >= n
    finally:
        if lmtpd is not None and lmtpd.poll() is None:
            lmtpd.kill()
            lmtpd.wait(timeout=30)
        d.stop()
        log.close()
