#!/usr/bin/env python3
"""Raw-socket fuzz and abuse of the KeyRoll agent's managed-identity token endpoint.

  abuse.py ENV_FILE METRICS_URL AGENT_PID MODE        (MODE: quick — CI, ~4 s a phase — or bench — ~15 s)

ENV_FILE is the token-endpoint.env the agent wrote (IDENTITY_ENDPOINT, IDENTITY_HEADER, AZURE_CLIENT_ID);
METRICS_URL its Prometheus text; AGENT_PID the agent's process (VmRSS and open descriptors from /proc).

After a warm-up request (retried up to 30 s: the agent may still be starting), runs these phases in order,
each with a legitimate client in a thread (a new connection every 50 ms, latency recorded) while the abuse
runs: idle (the baseline), malformed_request_lines, huge_urls, invalid_header_bytes, wrong_secret_flood,
slowloris (200 heads that never finish, until the server has closed them all) and idle_connections_2000.
After each phase: the agent's RSS, fds, the /metrics body size and its count of
keyroll_token_endpoint_requests_total series. Then one last legitimate request.

Prints one JSON object: {"mode", "phases": [{"name", "seconds", "legit_requests", "legit_ok",
"legit_p50_ms", "legit_p99_ms", "legit_max_ms", "legit_failures", "rss_kib", "rss_kib_max_during", "fds",
"fds_max_during", "metrics_bytes", "request_series", "abuse": {...}}], "final": {...},
"checks": {name: {"ok": bool, "detail" | "error": str}}}. No token or secret is printed. A watchdog prints
what was collected so far, with a failing `watchdog` check, if the run overstays (quick: 175 s); the exit
status is 0 whenever that JSON was printed, so the checks carry the verdict.
"""
import collections, errno, http.client, json, math, os, random, resource, selectors, socket, statistics, string, struct
import sys, threading, time, urllib.parse

if len(sys.argv) != 5 or sys.argv[4] not in ("quick", "bench"):
    sys.exit("usage: abuse.py ENV_FILE METRICS_URL AGENT_PID quick|bench")
env_file, METRICS_URL, AGENT_PID, MODE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
env = {}
for line in open(env_file):
    line = line.strip()
    if line and not line.startswith("#") and "=" in line:
        k, v = line.split("=", 1)
        env[k.strip()] = v.strip()
ENDPOINT, SECRET = env["IDENTITY_ENDPOINT"], env["IDENTITY_HEADER"]
_u = urllib.parse.urlsplit(ENDPOINT)
HOST, PORT, PATH = _u.hostname, _u.port or 80, _u.path or "/"
HOSTPORT = _u.netloc
FAMILY, _, _, _, SOCKADDR = socket.getaddrinfo(HOST, PORT, type=socket.SOCK_STREAM)[0]
LEGIT_TARGET = PATH + "?api-version=2019-08-01&resource=" + urllib.parse.quote("https://management.azure.com", safe="")

PHASE_SECONDS = {"quick": 4.0, "bench": 15.0}[MODE]
SLOWLORIS_MAX_SECONDS = {"quick": 40.0, "bench": 60.0}[MODE]
WATCHDOG_SECONDS = {"quick": 175.0, "bench": 420.0}[MODE]
LEGIT_INTERVAL = 0.05
# Abuse sockets close with a reset (SO_LINGER 0): thousands of short connections a second would
# otherwise leave this side's ephemeral ports in TIME_WAIT and starve the legitimate client.
LINGER_RESET = struct.pack("ii", 1, 0)

from checks import check, checks

result = {"mode": MODE, "phases": [], "checks": checks}
current = {"phase": "start"}
T0 = time.monotonic()
finished = threading.Event()
_emit_lock = threading.Lock()
_emitted = []


def emit():
    """Prints the one JSON object, once (the main thread or the watchdog, whichever comes first)."""
    with _emit_lock:
        if _emitted:
            return False
        for _ in range(10):  # another thread may be adding a check or a phase right now
            try:
                text = json.dumps(result)
                break
            except RuntimeError:
                time.sleep(0.05)
        else:
            text = json.dumps({"mode": MODE, "phases": [], "checks": {"emit": {"ok": False, "error": "could not serialise the results"}}})
        print(text, flush=True)
        _emitted.append(True)
        return True


def watchdog():
    if finished.wait(WATCHDOG_SECONDS):
        return
    checks["watchdog"] = {"ok": False, "error": f"still running after {WATCHDOG_SECONDS:.0f} s, in phase {current['phase']}"}
    print(f"abuse.py: watchdog fired in phase {current['phase']}", file=sys.stderr, flush=True)
    if emit():
        os._exit(0)


threading.Thread(target=watchdog, daemon=True, name="watchdog").start()


@check("rlimit_nofile")
def _():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == resource.RLIM_INFINITY or soft > 2300, f"only {soft} descriptors (hard limit {hard}); the phases need > 2,100"
    return {"detail": f"soft limit {soft}"}


# --- the agent, seen from outside ------------------------------------------------------------------

def proc_status():
    """The agent's /proc/PID/status fields, or None once it is gone."""
    try:
        with open(f"/proc/{AGENT_PID}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None


def rss_kib():
    s = proc_status()
    try:
        return int(s["VmRSS"].split()[0]) if s else None
    except (KeyError, ValueError, IndexError):
        return None  # a zombie has no VmRSS


def fd_count():
    try:
        return len(os.listdir(f"/proc/{AGENT_PID}/fd"))
    except OSError:
        return None


def metrics_sample(attempts=3):
    """(bytes of the /metrics body, number of keyroll_token_endpoint_requests_total series), or Nones
    when `attempts` tries a second apart all fail (right after a phase the agent may be busy closing)."""
    for attempt in range(attempts):
        sample = _metrics_once()
        if sample[0] is not None or attempt == attempts - 1:
            return sample
        time.sleep(1.0)


def _metrics_once():
    mu = urllib.parse.urlsplit(METRICS_URL)
    conn = http.client.HTTPConnection(mu.hostname, mu.port or 80, timeout=10)
    try:
        conn.request("GET", (mu.path or "/") + (f"?{mu.query}" if mu.query else ""))
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            return None, None
        return len(body), sum(1 for line in body.split(b"\n") if line.startswith(b"keyroll_token_endpoint_requests_total{"))
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        conn.close()


def legit_request(timeout=10.0):
    """One token request on a new connection: (ok, latency in ms, outcome). Records no body text."""
    start = time.monotonic()
    conn = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        conn.request("GET", LEGIT_TARGET, headers={"X-IDENTITY-HEADER": SECRET})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            ok, outcome = False, f"status:{r.status}"
        else:
            try:
                doc = json.loads(body)
                ok = isinstance(doc, dict) and bool(doc.get("access_token"))
            except ValueError:
                ok = False
            outcome = "ok" if ok else "no_access_token"
    except Exception as e:
        ok, outcome = False, f"error:{type(e).__name__}"
    finally:
        conn.close()
    return ok, (time.monotonic() - start) * 1000, outcome


def percentile(sorted_values, q):
    return round(sorted_values[math.ceil(q * len(sorted_values)) - 1], 1) if sorted_values else None


# --- raw sockets ------------------------------------------------------------------------------------

def errno_name(e):
    return errno.errorcode.get(e.errno, type(e).__name__) if isinstance(e, OSError) and e.errno else type(e).__name__


def status_of(data):
    """The status code of the first answer in `data`, `closed` for none, `not_http` for anything else."""
    if not data:
        return "closed"
    if data.startswith(b"HTTP/"):
        parts = data.split(b" ", 2)
        if len(parts) >= 2 and parts[1][:3].isdigit():
            return parts[1][:3].decode()
    return "not_http"


def read_status(s, limit=4096, timeout=2.0):
    """Reads the answer's first line (at most `limit` bytes, `timeout` s): its status, closed, timeout or reset."""
    data, deadline = b"", time.monotonic() + timeout
    try:
        while len(data) < limit and b"\r\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return status_of(data) if data else "timeout"
            s.settimeout(left)
            chunk = s.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        return status_of(data) if data else "timeout"
    except ConnectionResetError:
        return status_of(data) if data else "reset"
    return status_of(data)


def new_socket(timeout):
    s = socket.socket(FAMILY, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    s.settimeout(timeout)
    return s


def exchange(ph, payload, half_close=False, connect_timeout=2.0, send_timeout=2.0, read_timeout=2.0):
    """Connects, sends `payload` (the server may close early), reads the answer's status, closes."""
    s = ph.open(connect_timeout)
    try:
        s.connect(SOCKADDR)
        s.settimeout(send_timeout)
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return "closed_during_send"
        except TimeoutError:
            return "send_timeout"
        return read_status(s, timeout=read_timeout)
    finally:
        ph.close(s)


def open_many(ph, n, timeout, batch=250):
    """n non-blocking connects, `batch` in flight at a time, each batch given `timeout` s.
    Returns ([(socket, connected_at)], Counter of errno names for the ones that failed)."""
    done, errors = [], collections.Counter()
    sel = selectors.DefaultSelector()
    try:
        for first in range(0, n, batch):
            pending = set()
            for _ in range(min(batch, n - first)):
                try:
                    s = ph.open(0)
                except OSError as e:
                    errors[errno_name(e)] += 1
                    continue
                rc = s.connect_ex(SOCKADDR)
                if rc == 0:
                    done.append((s, time.monotonic()))
                elif rc == errno.EINPROGRESS:
                    pending.add(s)
                    sel.register(s, selectors.EVENT_WRITE)
                else:
                    errors[errno.errorcode.get(rc, str(rc))] += 1
                    ph.close(s)
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                    s = key.fileobj
                    sel.unregister(s)
                    pending.discard(s)
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == 0:
                        done.append((s, time.monotonic()))
                    else:
                        errors[errno.errorcode.get(err, str(err))] += 1
                        ph.close(s)
            for s in pending:
                sel.unregister(s)
                errors["connect_timeout"] += 1
                ph.close(s)
    finally:
        sel.close()
    return done, errors


# --- a phase ----------------------------------------------------------------------------------------

class Phase:
    """`with Phase(name) as ph:` runs the legitimate client and the RSS/fd sampler until the block ends;
    abuse threads started with ph.spawn() loop until then; sockets from ph.open() still open are closed.
    On exit it samples the agent and appends the phase's record to the results (an exception in the
    block is recorded there, not raised, so the next phases still run)."""

    def __init__(self, name):
        self.name = name
        self.abuse = {}                                          # the phase's own report
        self.tallies = collections.defaultdict(collections.Counter)
        self.lock = threading.Lock()
        self.stop = threading.Event()                            # the abuse threads stop
        self.legit_stop = threading.Event()                      # the legitimate client and the sampler stop
        self.threads, self.socks = [], set()
        self.latencies, self.outcomes = [], collections.Counter()
        self.rss_max = self.fds_max = None

    def tally(self, kind, outcome):
        with self.lock:
            self.tallies[kind][outcome] += 1

    def thread(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:  # nothing escapes a thread
                self.tally("errors", f"error:{type(e).__name__}")
        t = threading.Thread(target=run, daemon=True, name=f"{self.name}:{fn.__name__}")
        t.start()
        return t

    def spawn(self, n, body):
        """n abuse threads, thread k calling body(rng, i) for i = k, k+1, ... until the phase stops."""
        def abuse_loop(k):
            rng, i = random.Random(), k
            while not self.stop.is_set():
                try:
                    body(rng, i)
                except Exception as e:
                    self.tally("errors", f"error:{type(e).__name__}")
                    self.stop.wait(0.01)  # no hot loop on a refused connect
                i += 1
        self.threads += [self.thread(abuse_loop, k) for k in range(n)]

    def open(self, timeout):
        s = new_socket(timeout)
        with self.lock:
            self.socks.add(s)
        return s

    def close(self, s):
        with self.lock:
            self.socks.discard(s)
        try:
            s.close()
        except OSError:
            pass

    def hold(self, seconds):
        self.legit_stop.wait(seconds)

    def _legit(self):
        while not self.legit_stop.is_set():
            start = time.monotonic()
            ok, ms, outcome = legit_request()
            with self.lock:
                self.latencies.append(ms)
                self.outcomes[outcome] += 1
            self.legit_stop.wait(max(0.0, start + LEGIT_INTERVAL - time.monotonic()))

    def _sample(self):
        while True:
            r, f = rss_kib(), fd_count()
            if r is not None:
                self.rss_max = max(self.rss_max or 0, r)
            if f is not None:
                self.fds_max = max(self.fds_max or 0, f)
            if self.legit_stop.wait(0.25):
                return

    def __enter__(self):
        current["phase"] = self.name
        self.t0 = time.monotonic()
        self.helpers = [self.thread(self._legit), self.thread(self._sample)]
        return self

    def __exit__(self, kind, exc, tb):
        seconds = time.monotonic() - self.t0
        self.legit_stop.set()
        self.stop.set()
        deadline = time.monotonic() + 12
        for t in self.helpers + self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        with self.lock:
            socks, self.socks = list(self.socks), set()
            latencies, outcomes = sorted(self.latencies), collections.Counter(self.outcomes)
            tallies = {k: dict(v) for k, v in self.tallies.items()}
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        time.sleep(0.5)  # let the agent see the closes
        metrics_bytes, series = metrics_sample()
        record = {
            "name": self.name, "seconds": round(seconds, 2),
            "legit_requests": len(latencies), "legit_ok": outcomes["ok"],
            "legit_p50_ms": percentile(latencies, 0.50), "legit_p99_ms": percentile(latencies, 0.99),
            "legit_max_ms": round(latencies[-1], 1) if latencies else None,
            "legit_failures": {k: v for k, v in outcomes.items() if k != "ok"},
            "rss_kib": rss_kib(), "rss_kib_max_during": self.rss_max, "fds": fd_count(), "fds_max_during": self.fds_max,
            "metrics_bytes": metrics_bytes, "request_series": series,
            "abuse": {**self.abuse, **({"answers": tallies} if tallies else {})},
        }
        if exc is not None:
            record["error"] = f"{kind.__name__}: {str(exc)[:300]}"
        result["phases"].append(record)
        return True


# --- the phases -------------------------------------------------------------------------------------

def phase_idle():
    with Phase("idle") as ph:
        ph.hold(PHASE_SECONDS)


def phase_malformed_request_lines():
    printable = [chr(c) for c in range(0x20, 0x7F)]
    fixed = [
        ("garbage", b"GARBAGE\r\n\r\n", False),
        ("method_only", b"GET\r\n\r\n", False),
        ("http_9_9", f"GET {PATH} HTTP/9.9\r\n\r\n".encode(), False),
        ("control_bytes", b"\x00\x01\x02\r\n\r\n", False),
        ("three_spaces", f"GET   {PATH}   HTTP/1.1\r\nHost: {HOSTPORT}\r\n\r\n".encode(), False),
        ("no_crlf_then_close", f"GET {PATH} HTTP/1.1".encode(), True),
        ("random_200_printable", None, False),
    ]

    def body(rng, i):
        name, payload, half_close = fixed[i % len(fixed)]
        if payload is None:
            payload = "".join(rng.choices(printable, k=200)).encode() + b"\r\n\r\n"
        ph.tally(name, exchange(ph, payload, half_close=half_close))

    with Phase("malformed_request_lines") as ph:
        ph.spawn(4, body)
        ph.hold(PHASE_SECONDS)


def phase_huge_urls():
    sizes = (9_000, 70_000, 1_100_000)
    payloads = {n: f"GET {PATH}?resource={'a' * n} HTTP/1.1\r\nHost: {HOSTPORT}\r\nX-IDENTITY-HEADER: wrong\r\n\r\n".encode() for n in sizes}

    def body(rng, i):
        n = sizes[i % len(sizes)]
        ph.tally(f"url_{n}", exchange(ph, payloads[n], send_timeout=5.0))

    with Phase("huge_urls") as ph:
        ph.spawn(2, body)
        ph.hold(PHASE_SECONDS)


def phase_invalid_header_bytes():
    head = f"GET {PATH}?api-version=2019-08-01&resource=x HTTP/1.1\r\nHost: {HOSTPORT}\r\nX-IDENTITY-HEADER: wrong\r\n".encode()
    cases = [
        ("space_in_name", b"X Bad: v\r\n"),
        ("nul_in_value", b"X-V: a\x00b\r\n"),
        ("bare_cr_in_value", b"X-V: a\rb\r\n"),
        ("no_colon", b"NoColonHere\r\n"),
        ("100_headers", b"".join(b"X-A%d: b\r\n" % i for i in range(100))),
        ("header_20000_bytes", b"X-Big: " + b"a" * 20_000 + b"\r\n"),
        ("ff_bytes_in_value", b"X-V: \xff\xfe\xff\r\n"),
        ("obs_fold", b"X-Fold: a\r\n  continued\r\n"),
    ]

    def body(rng, i):
        name, extra = cases[i % len(cases)]
        ph.tally(name, exchange(ph, head + extra + b"\r\n"))

    with Phase("invalid_header_bytes") as ph:
        ph.spawn(4, body)
        ph.hold(PHASE_SECONDS)


def phase_wrong_secret_flood():
    alphabet = string.ascii_letters + string.digits + "-._~:/"

    def flood(k):
        rng, conn = random.Random(), None
        while not ph.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, PORT, timeout=5)
                    conn.connect()
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                    with ph.lock:
                        ph.socks.add(conn.sock)
                resource_ = "".join(rng.choices(alphabet, k=150))
                conn.request("GET", PATH + "?api-version=2019-08-01&resource=" + urllib.parse.quote(resource_, safe=""),
                             headers={"X-IDENTITY-HEADER": f"wrong-{rng.getrandbits(64):016x}"})
                r = conn.getresponse()
                r.read()
                ph.tally("status", str(r.status))
                if r.will_close:
                    ph.tally("connection", "closed_by_server")
                    conn = close_conn(conn)
            except Exception as e:
                ph.tally("errors", f"error:{type(e).__name__}")
                conn = close_conn(conn)
                ph.stop.wait(0.01)
        close_conn(conn)

    def close_conn(conn):
        if conn is not None and conn.sock is not None:
            ph.close(conn.sock)
        if conn is not None:
            conn.close()
        return None

    with Phase("wrong_secret_flood") as ph:
        ph.threads += [ph.thread(flood, k) for k in range(4)]
        ph.hold(PHASE_SECONDS)


def phase_slowloris():
    head = f"GET {PATH}?api-version=2019-08-01&resource=x HTTP/1.1\r\nHost: a\r\n".encode()
    with Phase("slowloris") as ph:
        deadline = ph.t0 + SLOWLORIS_MAX_SECONDS
        conns, connect_errors = open_many(ph, 200, 10.0)
        started = dict(conns)
        closed_after, answered, errors = {}, collections.Counter(), collections.Counter()
        live = set()
        sel = selectors.DefaultSelector()

        def server_closed(s):
            closed_after[s] = time.monotonic() - started[s]
            if s in live:
                live.discard(s)
                sel.unregister(s)
            ph.close(s)

        def send(s, data):
            try:
                s.send(data)
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                server_closed(s)
            except OSError as e:
                errors[errno_name(e)] += 1

        try:
            for s, _ in conns:
                live.add(s)
                sel.register(s, selectors.EVENT_READ)
                send(s, head)
            seen_answer = set()
            next_tick = time.monotonic() + 1.0
            while live and time.monotonic() < deadline:
                for key, _ in sel.select(max(0.0, min(next_tick, deadline) - time.monotonic())):
                    s = key.fileobj
                    if s not in live:
                        continue
                    try:
                        data = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    except OSError as e:
                        errors[errno_name(e)] += 1
                        continue
                    if not data:
                        server_closed(s)
                    elif s not in seen_answer:  # an answer (408, 400...) before the close
                        seen_answer.add(s)
                        answered[status_of(data)] += 1
                if time.monotonic() >= next_tick:
                    for s in list(live):
                        send(s, b"X")
                    next_tick += 1.0
        finally:
            sel.close()
        times = sorted(closed_after.values())
        ph.abuse = {
            "connections": 200, "connected": len(conns), "connect_errors": dict(connect_errors),
            "closed_by_server": len(closed_after), "still_open_at_end": len(live),
            "close_seconds_max": round(times[-1], 2) if times else None,
            "close_seconds_median": round(statistics.median(times), 2) if times else None,
            "close_seconds_min": round(times[0], 2) if times else None,
            "answered_before_close": dict(answered), "errors": dict(errors),
        }


def phase_idle_connections():
    with Phase("idle_connections_2000") as ph:
        start = time.monotonic()
        conns, connect_errors = open_many(ph, 2000, 10.0)
        connect_seconds = time.monotonic() - start
        ph.hold(PHASE_SECONDS)
        closed = sent_data = 0
        sel = selectors.DefaultSelector()
        try:
            for s, _ in conns:
                sel.register(s, selectors.EVENT_READ)
            for key, _ in sel.select(0):
                try:
                    if key.fileobj.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        closed += 1
                    else:
                        sent_data += 1
                except BlockingIOError:
                    pass
                except OSError:  # reset
                    closed += 1
        finally:
            sel.close()
        ph.abuse = {
            "attempted": 2000, "connected": len(conns), "connect_errors": dict(connect_errors),
            "connect_seconds": round(connect_seconds, 2), "held_seconds": PHASE_SECONDS,
            "closed_by_server_at_end": closed, "server_sent_data": sent_data,
        }


# --- the run ----------------------------------------------------------------------------------------

def finish():
    checks["watchdog"] = {"ok": True, "detail": f"finished in {time.monotonic() - T0:.0f} s"}
    finished.set()
    emit()
    sys.exit(0)


current["phase"] = "warm_up"


@check("warm_up")
def _():
    deadline, outcomes = time.monotonic() + 30, collections.Counter()
    while True:
        ok, ms, outcome = legit_request(timeout=max(5.0, deadline - time.monotonic()))
        outcomes[outcome] += 1
        if ok:
            return {"detail": f"first token in {ms:.0f} ms after {sum(outcomes.values())} attempt(s)"}
        assert time.monotonic() < deadline, f"no token within 30 s: {dict(outcomes)}"
        time.sleep(0.5)


if not checks["warm_up"]["ok"]:
    finish()

PHASES = [phase_idle, phase_malformed_request_lines, phase_huge_urls, phase_invalid_header_bytes,
          phase_wrong_secret_flood, phase_slowloris, phase_idle_connections]
for run_phase in PHASES:
    run_phase()

current["phase"] = "final"
final_ok, final_ms, final_outcome = legit_request()
final_status = proc_status()
final_bytes, final_series = metrics_sample()
result["final"] = {"legit_outcome": final_outcome, "legit_ms": round(final_ms, 1), "rss_kib": rss_kib(), "fds": fd_count(),
                   "metrics_bytes": final_bytes, "request_series": final_series}
by_name = {p["name"]: p for p in result["phases"]}


@check("phases_ran")
def _():
    names = [p["name"] for p in result["phases"]]
    assert len(names) == len(PHASES), f"only {names}"
    broken = {p["name"]: p["error"] for p in result["phases"] if "error" in p}
    assert not broken, broken
    return {"detail": ", ".join(names)}


for phase in result["phases"]:
    @check(f"legit_client_served_in_{phase['name']}")
    def _(p=phase):
        n, ok = p["legit_requests"], p["legit_ok"]
        assert n >= 5, f"only {n} legitimate requests in {p['seconds']} s"
        assert ok == n, f"{n - ok} of {n} legitimate requests failed: {p['legit_failures']}"
        return {"detail": f"{ok}/{n} served, p50 {p['legit_p50_ms']} ms, p99 {p['legit_p99_ms']} ms, max {p['legit_max_ms']} ms"}


@check("slowloris_connections_closed_by_server")
def _():
    a = by_name["slowloris"]["abuse"]
    assert a["closed_by_server"] == a["connections"], (
        f"{a['closed_by_server']} of {a['connections']} closed by the server within {by_name['slowloris']['seconds']} s "
        f"(connected {a['connected']}, errors {a['connect_errors']})")
    return {"detail": f"all {a['connections']} closed, median {a['close_seconds_median']} s, max {a['close_seconds_max']} s"}


@check("idle_connections_accepted")
def _():
    a = by_name["idle_connections_2000"]["abuse"]
    assert a["connected"] >= 1900, f"{a['connected']} of {a['attempted']} connected: {a['connect_errors']}"
    return {"detail": f"{a['connected']} of {a['attempted']} connected, {a['closed_by_server_at_end']} closed by the server by the end"}


@check("metrics_bounded")
def _():
    idle = by_name["idle"]
    assert None not in (idle["request_series"], idle["metrics_bytes"], final_series, final_bytes), (
        f"/metrics unreadable: idle {idle['metrics_bytes']} bytes, final {final_bytes} bytes")
    assert final_series <= idle["request_series"] + 3, f"{final_series} request series after the abuse, {idle['request_series']} idle"
    assert final_bytes <= idle["metrics_bytes"] + 4096, f"{final_bytes} bytes of metrics after the abuse, {idle['metrics_bytes']} idle"
    return {"detail": f"series {idle['request_series']} -> {final_series}, bytes {idle['metrics_bytes']} -> {final_bytes}"}


@check("rss_bounded")
def _():
    idle, final = by_name["idle"]["rss_kib"], result["final"]["rss_kib"]
    assert idle is not None and final is not None, f"RSS unreadable: idle {idle}, final {final}"
    assert final - idle <= 65536, f"RSS grew {final - idle} KiB ({idle} -> {final})"
    return {"detail": f"{idle} -> {final} KiB ({final - idle:+d})"}


@check("agent_alive_after")
def _():
    assert final_ok, f"the last legitimate request failed: {final_outcome}"
    assert final_status is not None, f"/proc/{AGENT_PID}/status is gone"
    state = final_status.get("State", "")
    assert not state.startswith(("Z", "X")), f"the agent is {state}"
    return {"detail": f"served in {final_ms:.0f} ms, state {state}"}


finish()
