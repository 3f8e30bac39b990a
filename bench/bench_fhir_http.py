#!/usr/bin/env python3
"""Benchmark careplan's FHIR create and read-by-id through the full HTTP stack, against a bare WSGI baseline.

Both servers run under gunicorn (gthread, same workers and threads, same access log) on the same database in the
same run; the figures that matter are the ratios careplan/baseline, not the absolute numbers, which depend on the
machine. See bench/README.md and docs/performance.md.

    .venv/bin/python bench/bench_fhir_http.py            # fresh PostgreSQL database careplan_bench
    .venv/bin/python bench/bench_fhir_http.py --sqlite   # temporary SQLite file
    .venv/bin/python bench/bench_fhir_http.py --quick    # smoke run, a couple of seconds per phase
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_PG_DATABASE = "careplan_bench"
PROTECTED_DATABASES = {"test", "postgres", "template0", "template1"}
# The same gunicorn access log careplan serve writes, so both servers pay for it.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
REQUEST_TIMEOUT = 30.0
READY_TIMEOUT = 90.0
BUSY_MACHINE_PERCENT = 25.0  # CPU % of other programs above which the run is flagged as noisy


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# -- workload ----------------------------------------------------------------------------------------------

_GIVEN = ["Zoë", "Léa", "Noah", "Amir", "Chloé", "Mateo", "Aroha", "Siddharth", "Ingrid", "Kwame", "Mei", "Jonas"]
_FAMILY = ["Ångström", "Tremblay", "Nguyen", "Okafor", "García", "Kowalski", "Singh", "O'Brien", "Haddad", "Ito"]
_PLACES = [("Montréal", "QC", "H2X 1Y4"), ("Toronto", "ON", "M5V 2T6"), ("Halifax", "NS", "B3H 1A1"),
           ("Winnipeg", "MB", "R3C 0V8"), ("Vancouver", "BC", "V6B 1A1"), ("Québec", "QC", "G1R 4P5")]
_LANGUAGES = [("fr-CA", "French (Canada)"), ("en-CA", "English (Canada)"), ("pa", "Punjabi"), ("ar", "Arabic")]


def make_patient(rng: random.Random, n: int) -> dict:
    """Return a realistic Patient (~1.5 KB as compact JSON): identifiers, names, telecom, address, extensions."""
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    city, province, postal = rng.choice(_PLACES)
    birth = f"{rng.randint(1940, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    language, language_display = rng.choice(_LANGUAGES)
    phone = f"+1-555-{rng.randint(0, 9999):04d}"
    return {
        "resourceType": "Patient",
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
            "valueAddress": {"city": city, "state": province, "country": "CA"},
        }],
        "identifier": [
            {"use": "usual",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                                  "display": "Medical record number"}]},
             "system": "https://careplan.example.org/mrn", "value": f"MRN-{n:08d}"},
            {"use": "official", "system": "https://health.example.org/health-card",
             "value": f"{rng.randint(1000, 9999)}-{rng.randint(100, 999)}-{rng.randint(100, 999)}",
             "period": {"start": "2019-01-01", "end": "2029-12-31"}},
        ],
        "active": True,
        "name": [
            {"use": "official", "family": family, "given": [given, rng.choice(_GIVEN)], "prefix": ["Mx."]},
            {"use": "nickname", "given": [given[:3]]},
        ],
        "telecom": [
            {"system": "phone", "value": phone, "use": "mobile", "rank": 1},
            {"system": "phone", "value": f"+1-555-{rng.randint(0, 9999):04d}", "use": "home"},
            {"system": "email", "value": f"{given.lower()}.{n}@example.org", "use": "home"},
        ],
        "gender": rng.choice(["female", "male", "other", "unknown"]),
        "birthDate": birth,
        "address": [{
            "use": "home", "type": "both", "line": [f"{rng.randint(1, 9999)} Rue Sainte-Catherine", "App. 4"],
            "city": city, "state": province, "postalCode": postal, "country": "CA",
            "period": {"start": "2021-06-01"},
        }],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": "S", "display": "Never Married"}]},
        "contact": [{
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                          "code": "C", "display": "Emergency Contact"}]}],
            "name": {"use": "official", "family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]},
            "telecom": [{"system": "phone", "value": f"+1-555-{rng.randint(0, 9999):04d}", "use": "mobile"}],
        }],
        "communication": [{
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language, "display": language_display}],
                         "text": language_display},
            "preferred": True,
        }],
    }


# -- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------------------


class _Closed(Exception):
    """The server closed the connection before answering (an idle keep-alive connection timed out)."""


class Connection:
    """One keep-alive HTTP/1.1 connection; cheaper per request than http.client, so the servers are measured."""

    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection(self.address, timeout=REQUEST_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        for attempt in (1, 2):
            if self.sock is None:
                self.connect()
            try:
                self.sock.sendall(raw)
                return self._response()
            except (_Closed, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if not self._fill():
                if self.buffer:
                    raise OSError("connection closed in the middle of a response")
                raise _Closed()
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = self._exactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._chunked()
        else:  # body delimited by the end of the connection
            while self._fill():
                pass
            body, self.buffer = self.buffer, b""
            self.close()
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, headers, body

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise OSError("connection closed in the middle of a response body")
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    def _chunked(self) -> bytes:
        parts = []
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                if not self._fill():
                    raise OSError("connection closed in the middle of a chunked body")
            size = int(self.buffer[:end].split(b";")[0], 16)
            self.buffer = self.buffer[end + 2:]
            parts.append(self._exactly(size))
            self._exactly(2)
            if size == 0:
                return b"".join(parts)


def post_request(port: int, path: str, body: bytes, *, content_type: str = "application/fhir+json",
                 headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Accept: application/fhir+json\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body


def get_request(port: int, path: str, *, headers: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/fhir+json\r\n{headers}"
            "\r\n").encode("ascii")


# -- CPU accounting from /proc (Linux; None elsewhere) -----------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """Return (parent pid, CPU seconds used) of a process, or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu(root: int) -> dict[int, float] | None:
    """Return CPU seconds by pid for root and its descendants (gunicorn master and workers)."""
    if not os.path.isdir("/proc"):
        return None
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _proc_stat(int(name))) is not None:
            parents[int(name)], used[int(name)] = stat
    if root not in used:
        return None
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return {pid: used[pid] for pid in tree}


def pids_cpu(pids: list[int]) -> dict[int, float] | None:
    result = {}
    for pid in pids:
        stat = _proc_stat(pid)
        if stat is None:
            return None
        result[pid] = stat[1]
    return result


def cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


class PostgresBackends:
    """CPU of the PostgreSQL backends connected to the benchmark database (server on this machine only)."""

    def __init__(self, libpq_url: str, database: str):
        import psycopg

        self.connection = psycopg.connect(libpq_url, autocommit=True)
        self.database = database

    def snapshot(self) -> dict[int, float] | None:
        pids = [row[0] for row in self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,))]
        result = {}
        for pid in pids:
            stat = _proc_stat(pid)
            if stat is None:
                if not os.path.exists(f"/proc/{pid}"):
                    continue  # ended between the query and now
                return None
            result[pid] = stat[1]
        return result if os.path.isdir("/proc") else None

    def close(self) -> None:
        self.connection.close()


# -- servers -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """A gunicorn server in its own session, so it can be stopped with every worker it forked."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.name, self.command, self.env, self.cwd, self.log_path = name, command, env, cwd, log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, path: str = "/healthz") -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.process.returncode} before it was ready:\n"
                                 + self.log_tail())
            connection = Connection(HOST, self.port)
            try:
                status, _, _ = connection.request(get_request(self.port, path))
                if status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.2)
        raise BenchError(f"{self.name} was not ready after {READY_TIMEOUT:.0f} s:\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            process.send_signal(signal.SIGTERM)  # gunicorn: graceful stop of the master and its workers
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the session we created: this server's processes only
            except (ProcessLookupError, PermissionError):
                pass
            process.wait(timeout=5)


# -- load generation ---------------------------------------------------------------------------------------


def system_busy() -> float | None:
    """Return the CPU seconds every process on the machine has used so far (from /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


@dataclass
class Slice:
    """One stretch of load on one server: raw latencies and the CPU each party used meanwhile."""

    latencies: list[float]
    created_ids: list[str]
    errors: int
    first_error: str | None
    seconds: float
    cpu: dict[str, float | None]  # server, database, load generator, whole machine (seconds)


@dataclass
class PhaseResult:
    workload: str
    server: str
    requests: int
    errors: int
    seconds: float
    requests_per_second: float
    latency_ms: dict[str, float]
    server_cpu_ms_per_request: float | None = None
    database_cpu_ms_per_request: float | None = None
    load_generator_cpu_percent: float | None = None
    background_cpu_percent: float | None = None
    first_error: str | None = None


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run_load(server: Server, workload: str, *, seconds: float, concurrency: int, max_requests: int,
             bodies: list[bytes] | None = None, ids: list[str] | None = None, seed: int = 0,
             cpu_probes: dict | None = None, fresh_connections: bool = False, headers: str = "") -> Slice:
    """Drive server with `concurrency` keep-alive connections for `seconds` (or `max_requests`), then stop.

    With fresh_connections every request opens its own connection, so gunicorn spreads them over all its
    workers: the warm-up uses it to make every worker load what it loads lazily (models, compiled expressions).
    """
    port = server.port
    quota = max(1, max_requests // concurrency)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    created: list[list[str]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: list[str] = []
    stop = threading.Event()
    ready = threading.Barrier(concurrency + 1)
    start_at: list[float] = []

    if workload == "create":
        requests = [post_request(port, "/fhir/Patient", body, headers=headers) for body in bodies]
        expected = 201
    else:
        requests = [get_request(port, f"/fhir/Patient/{res_id}", headers=headers) for res_id in ids]
        expected = 200

    def worker(slot: int) -> None:
        rng = random.Random(f"{seed}-{slot}-{time.time_ns()}")
        connection = Connection(HOST, port)
        mine, mine_created = latencies[slot], created[slot]
        try:
            connection.connect()
        except OSError as exc:
            first_error.append(f"connect: {exc}")
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        deadline = start_at[0] + seconds
        offset = rng.randrange(len(requests))
        try:
            for count in range(quota):
                if stop.is_set():
                    break
                raw = requests[(offset + count) % len(requests)] if workload == "create" else rng.choice(requests)
                began = time.perf_counter()
                try:
                    status, answer_headers, body = connection.request(raw)
                except OSError as exc:
                    errors[slot] += 1
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}")
                    connection.close()
                    if time.perf_counter() >= deadline:
                        break
                    continue
                finished = time.perf_counter()
                if status != expected:
                    errors[slot] += 1
                    if not first_error:
                        first_error.append(f"HTTP {status}: {body[:400].decode('utf-8', 'replace')}")
                else:
                    mine.append(finished - began)
                    if workload == "create":
                        location = answer_headers.get(b"location", b"").decode("ascii")
                        mine_created.append(location.split("/_history/")[0].rsplit("/", 1)[-1])
                if fresh_connections:
                    connection.close()
                if finished >= deadline:
                    break
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True, name=f"load-{slot}")
               for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    probes = {**(cpu_probes or {}), "load_generator": time.process_time, "machine": system_busy}
    before = {name: probe() for name, probe in probes.items()}
    start_at.append(time.perf_counter())
    ready.wait()
    hard_deadline = time.monotonic() + seconds + 2 * REQUEST_TIMEOUT
    try:
        for thread in threads:
            while thread.is_alive():  # short joins, so Ctrl-C reaches the main thread
                thread.join(timeout=0.2)
                if time.monotonic() > hard_deadline:
                    stop.set()
                    raise BenchError(f"{workload} on {server.name} did not stop in time")
    except BaseException:
        stop.set()
        raise
    elapsed = time.perf_counter() - start_at[0]
    after = {name: probe() for name, probe in probes.items()}
    cpu = {}
    for name in probes:
        if isinstance(before[name], dict) or before[name] is None or after[name] is None:
            cpu[name] = cpu_delta(before[name], after[name])
        else:
            cpu[name] = after[name] - before[name]
    return Slice([value for chunk in latencies for value in chunk], [i for chunk in created for i in chunk],
                 sum(errors), first_error[0] if first_error else None, elapsed, cpu)


def summarize(workload: str, server: str, slices: list[Slice]) -> PhaseResult:
    """Merge the slices of one workload on one server into its figures."""
    ordered = sorted(value for piece in slices for value in piece.latencies)
    done, elapsed = len(ordered), sum(piece.seconds for piece in slices)
    errors = sum(piece.errors for piece in slices)

    def total(name: str) -> float | None:
        values = [piece.cpu.get(name) for piece in slices]
        return None if any(v is None for v in values) else sum(values)

    result = PhaseResult(
        workload=workload, server=server, requests=done, errors=errors, seconds=round(elapsed, 3),
        requests_per_second=round(done / elapsed, 1) if elapsed > 0 else 0.0,
        latency_ms={name: round(percentile(ordered, q) * 1000, 2)
                    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))}
        | {"mean": round(sum(ordered) / done * 1000, 2) if done else float("nan")},
        first_error=next((piece.first_error for piece in slices if piece.first_error), None),
    )
    if done:
        for name, attribute in (("server", "server_cpu_ms_per_request"),
                                ("database", "database_cpu_ms_per_request")):
            if (spent := total(name)) is not None:
                setattr(result, attribute, round(1000 * spent / done, 3))
    if elapsed > 0:
        if (own := total("load_generator")) is not None:
            result.load_generator_cpu_percent = round(100 * own / elapsed, 1)
        machine = total("machine")
        known = [total(name) for name in ("server", "database", "load_generator")]
        if machine is not None and known[0] is not None and known[2] is not None:
            # What other programs on the machine used meanwhile: they compete with the servers.
            background = machine - sum(k for k in known if k is not None)
            result.background_cpu_percent = round(max(0.0, 100 * background / elapsed), 1)
    return result


# -- database set-up ---------------------------------------------------------------------------------------


@dataclass
class Target:
    """The database of one run: the URL careplan gets, the libpq/sqlite URL the baseline gets, and clean-up."""

    backend: str
    careplan_url: str
    baseline_url: str
    database: str | None = None
    admin_url: str | None = None
    temp_dir: Path | None = None
    created_here: bool = False


def prepare_database(args) -> Target:
    if args.sqlite:
        temp_dir = Path(tempfile.mkdtemp(prefix="careplan-bench-"))
        path = temp_dir / "bench.sqlite3"
        return Target("sqlite", f"sqlite:///{path}", f"sqlite:///{path}", temp_dir=temp_dir)
    if args.database_url:
        url = args.database_url
        if url.startswith("sqlite:///"):
            return Target("sqlite", url, url)
        libpq = _libpq_url(url)
        database = _database_name(libpq)
        _refuse_protected(database)
        return Target("postgresql", "postgresql+psycopg://" + libpq.split("://", 1)[1], libpq, database=database)
    import psycopg
    from psycopg import sql

    admin_url = args.pg_admin_url
    database = DEFAULT_PG_DATABASE
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot create the PostgreSQL database {database} through {admin_url}: {exc}\n"
                         "start PostgreSQL, pass --pg-admin-url or --database-url, or use --sqlite") from None
    libpq = admin_url.rsplit("/", 1)[0] + "/" + database
    return Target("postgresql", "postgresql+psycopg://" + libpq.split("://", 1)[1], libpq, database=database,
                  admin_url=admin_url, created_here=True)


def _libpq_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    raise BenchError(f"--database-url must be a PostgreSQL or sqlite:/// URL, got {url!r}")


def _database_name(libpq_url: str) -> str:
    return libpq_url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0] if "/" in libpq_url.split("://", 1)[1] \
        else ""


def _refuse_protected(database: str) -> None:
    if database in PROTECTED_DATABASES:
        raise BenchError(f"refusing to benchmark in the database {database!r}: the benchmark fills it with "
                         "Patients; give it a database of its own")


def drop_database(target: Target) -> None:
    if not target.created_here:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(target.admin_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.database)))


# -- authentication ----------------------------------------------------------------------------------------

BENCH_SCOPES = "system/Patient.cruds"


def register_client(target: Target) -> tuple[str, str] | None:
    """Register an OAuth client for the benchmark in its database; None when careplan has no authentication."""
    try:
        from careplan.auth import clients
    except ImportError:
        return None
    from careplan.db import Database

    database = Database(target.careplan_url)
    try:
        new = clients.register(database, name="bench_fhir_http", role="ehr", scopes=BENCH_SCOPES)
    except Exception as exc:  # noqa: BLE001 - whatever the registration API raises, say what failed
        raise BenchError(f"cannot register the benchmark's OAuth client: {type(exc).__name__}: {exc}") from None
    finally:
        database.dispose()
    return new.client.client_id, new.secret


def access_token(server: "Server", client_id: str, secret: str) -> str:
    """Get a bearer token from careplan's token endpoint (client_credentials, client_secret_basic)."""
    from base64 import b64encode
    from urllib.parse import quote, urlencode

    basic = b64encode(f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()).decode("ascii")
    form = urlencode({"grant_type": "client_credentials", "scope": BENCH_SCOPES}).encode("ascii")
    connection = Connection(HOST, server.port)
    try:
        status, _, body = connection.request(post_request(
            server.port, "/oauth/token", form, content_type="application/x-www-form-urlencoded",
            headers=f"Authorization: Basic {basic}\r\n"))
    finally:
        connection.close()
    if status != 200:
        raise BenchError(f"the token endpoint answered {status}: {body[:400].decode('utf-8', 'replace')}")
    return json.loads(body)["access_token"]


def migrate(target: Target) -> None:
    env = {**os.environ, "CAREPLAN_DATABASE_URL": target.careplan_url}
    done = subprocess.run([sys.executable, "-m", "careplan.cli", "db", "upgrade"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"careplan db upgrade failed:\n{done.stdout}{done.stderr}")


# -- the run -----------------------------------------------------------------------------------------------


def _no_control_socket() -> list[str]:
    """gunicorn >= 25.1 opens a control socket at a fixed per-user path; the baseline does not need one."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def machine_info() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for package in ("gunicorn", "flask", "sqlalchemy", "psycopg", "fhir.resources", "pydantic", "fhirpathpy",
                    "pyjwt", "simplejson"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "packages": versions}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="benchmark in this existing database (PostgreSQL or sqlite:///) "
                       "instead of a fresh PostgreSQL database careplan_bench")
    where.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file")
    parser.add_argument("--pg-admin-url", default=os.environ.get("CAREPLAN_BENCH_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL),
                        help="PostgreSQL maintenance database used to drop and create careplan_bench")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (both servers)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (both servers; careplan "
                        "serve's default)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections driving the load")
    parser.add_argument("--rounds", type=int, default=4, help="slices each phase is cut into, alternating "
                        "careplan and baseline (new connections each slice)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per phase")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s phases, 0.5 s warm-up")
    parser.add_argument("--keep-database", action="store_true", help="do not drop careplan_bench at the end")
    parser.add_argument("--output", type=Path, help="JSON results file (default: bench/results/<timestamp>-...)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated Patients and read order")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 2.0), min(args.warmup, 0.5)
    for name in ("workers", "threads", "concurrency", "max_requests", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")
    return args


def print_table(results: list[PhaseResult], ratios: dict) -> None:
    header = (f"{'workload':<8} {'server':<9} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
              f"{'requests':>8} {'errors':>6} {'server CPU':>10} {'db CPU':>7} {'loadgen':>7} {'other':>6}")
    print(header)
    print(f"{'':<8} {'':<9} {'':>8} {'':>7} {'':>7} {'':>7} {'':>8} {'':>6} {'ms/req':>10} {'ms/req':>7} "
          f"{'CPU %':>7} {'CPU %':>6}")
    print("-" * len(header))

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-".rjust(int(spec.strip(">").split(".")[0]))

    for r in results:
        print(f"{r.workload:<8} {r.server:<9} {r.requests_per_second:>8.1f} {r.latency_ms['p50']:>7.2f} "
              f"{r.latency_ms['p95']:>7.2f} {r.latency_ms['p99']:>7.2f} {r.requests:>8d} {r.errors:>6d} "
              f"{fmt(r.server_cpu_ms_per_request, '>10.2f')} {fmt(r.database_cpu_ms_per_request, '>7.2f')} "
              f"{fmt(r.load_generator_cpu_percent, '>7.0f')} {fmt(r.background_cpu_percent, '>6.0f')}")
    print()
    for workload, ratio in ratios.items():
        print(f"{workload:<8} careplan/baseline: throughput x{ratio['throughput']:.3f}, "
              f"p50 latency x{ratio['p50_latency']:.2f}, p95 latency x{ratio['p95_latency']:.2f}"
              + (f", server CPU per request x{ratio['server_cpu_per_request']:.2f}"
                 if ratio.get("server_cpu_per_request") else ""))
    busy = [r for r in results if (r.background_cpu_percent or 0) > BUSY_MACHINE_PERCENT]
    if busy:
        print(f"\nwarning: other programs used up to {max(r.background_cpu_percent for r in busy):.0f}% of a CPU "
              "during the run; the figures are noisier than on a quiet machine")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    servers: list[Server] = []
    target: Target | None = None
    backends: PostgresBackends | None = None

    def on_sigterm(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    try:
        target = prepare_database(args)
        print(f"database: {target.backend} ({target.careplan_url})", flush=True)
        migrate(target)
        credentials = register_client(target)

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}
        careplan = Server(
            "careplan",
            [sys.executable, "-m", "careplan.cli", "serve", "--host", HOST, "--port", "{port}",
             "--workers", str(args.workers), "--threads", str(args.threads)],
            {**base_env, "CAREPLAN_DATABASE_URL": target.careplan_url,
             "CAREPLAN_TOKEN_LIFETIME_SECONDS": "7200"}, PROJECT_ROOT,
            RESULTS_DIR / "careplan-server.log")
        baseline = Server(
            "baseline",
            [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{{port}}", "--workers", str(args.workers),
             "--threads", str(args.threads), "--worker-class", "gthread", "--access-logfile", "-",
             "--access-logformat", ACCESS_LOG_FORMAT, *_no_control_socket(), "--chdir", str(BENCH_DIR),
             "baseline_wsgi:application"],
            {**base_env, "BENCH_BASELINE_DATABASE_URL": target.baseline_url}, BENCH_DIR,
            RESULTS_DIR / "baseline-server.log")
        servers = [careplan, baseline]
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        # Both servers get the same Authorization header; the baseline ignores it, careplan verifies it.
        auth_header = ""
        if credentials is not None:
            auth_header = f"Authorization: Bearer {access_token(careplan, *credentials)}\r\n"
        print(f"careplan on :{careplan.port}, baseline on :{baseline.port}; {args.workers} workers x "
              f"{args.threads} threads each; {args.concurrency} connections; {args.seconds:g} s per phase "
              f"after {args.warmup:g} s warm-up; {'with' if auth_header else 'no'} bearer token", flush=True)

        if target.backend == "postgresql":
            try:
                backends = PostgresBackends(target.baseline_url, target.database)
            except Exception:  # noqa: BLE001 - CPU figures are optional
                backends = None

        rng = random.Random(args.seed)
        bodies = [json.dumps(make_patient(rng, n), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                  for n in range(2000)]
        results: list[PhaseResult] = []
        ids: dict[str, list[str]] = {name: [] for name in ("careplan", "baseline")}
        slice_seconds = args.seconds / args.rounds
        for workload in ("create", "read"):
            for server in servers:  # warm every worker of both servers for this workload
                if workload == "read" and not ids[server.name]:
                    raise BenchError(f"no {server.name} Patient was created, nothing to read")
                if args.warmup > 0:
                    warm = run_load(server, workload, seconds=args.warmup, concurrency=args.concurrency,
                                    max_requests=args.max_requests, bodies=bodies, ids=ids[server.name],
                                    seed=args.seed, headers=auth_header, fresh_connections=True)
                    if warm.errors and not warm.latencies:
                        raise BenchError(f"{workload} on {server.name} fails: {warm.first_error}")
                    ids[server.name].extend(warm.created_ids)
            slices: dict[str, list[Slice]] = {server.name: [] for server in servers}
            for round_ in range(args.rounds):
                # careplan, baseline, then baseline, careplan: a drift in background load hits both alike.
                for server in (servers if round_ % 2 == 0 else servers[::-1]):
                    probes = {"server": (lambda s=server: tree_cpu(s.process.pid))}
                    if backends is not None:
                        probes["database"] = backends.snapshot
                    piece = run_load(server, workload, seconds=slice_seconds, concurrency=args.concurrency,
                                     max_requests=max(1, args.max_requests // args.rounds), bodies=bodies,
                                     ids=ids[server.name], seed=args.seed + round_, headers=auth_header,
                                     cpu_probes=probes)
                    slices[server.name].append(piece)
                    if workload == "create":
                        ids[server.name].extend(piece.created_ids)
            for server in servers:
                result = summarize(workload, server.name, slices[server.name])
                results.append(result)
                print(f"  {workload:<6} {server.name:<8} {result.requests_per_second:>8.1f} req/s  "
                      f"p50 {result.latency_ms['p50']:.2f} ms  p95 {result.latency_ms['p95']:.2f} ms  "
                      f"errors {result.errors}", flush=True)
                if result.errors:
                    print(f"    first error: {result.first_error}", flush=True)

        empty = [r for r in results if not r.requests]
        if empty:
            raise BenchError(f"{empty[0].workload} on {empty[0].server}: no request succeeded "
                             f"({empty[0].first_error})")
        by = {(r.workload, r.server): r for r in results}
        ratios = {}
        for workload in ("create", "read"):
            mine, base = by[(workload, "careplan")], by[(workload, "baseline")]
            ratio = {
                "throughput": round(mine.requests_per_second / base.requests_per_second, 4)
                if base.requests_per_second else None,
                "p50_latency": round(mine.latency_ms["p50"] / base.latency_ms["p50"], 3),
                "p95_latency": round(mine.latency_ms["p95"] / base.latency_ms["p95"], 3),
            }
            if mine.server_cpu_ms_per_request and base.server_cpu_ms_per_request:
                ratio["server_cpu_per_request"] = round(
                    mine.server_cpu_ms_per_request / base.server_cpu_ms_per_request, 3)
            ratios[workload] = ratio
        print()
        print_table(results, ratios)

        report = {
            "benchmark": "fhir_http",
            "started": started.isoformat(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "database": target.backend,
            "authenticated": bool(auth_header),
            "settings": {"workers": args.workers, "threads": args.threads, "concurrency": args.concurrency,
                         "seconds": args.seconds, "rounds": args.rounds, "warmup": args.warmup,
                         "max_requests": args.max_requests,
                         "seed": args.seed, "patient_bytes_mean": round(sum(map(len, bodies)) / len(bodies))},
            "machine": machine_info(),
            "results": [asdict(r) for r in results],
            "ratios_careplan_over_baseline": ratios,
        }
        output = args.output or RESULTS_DIR / (f"{started.strftime('%Y%m%dT%H%M%SZ')}-fhir_http-{target.backend}"
                                               f"{'-quick' if args.quick else ''}.json")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nresults written to {output}")
        failed = [r for r in results if r.errors]
        if failed:
            print("some requests failed: the figures above are not trustworthy", file=sys.stderr)
            return 1
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for server in servers:
            server.stop()
        if backends is not None:
            backends.close()
        if target is not None:
            if target.temp_dir is not None:
                shutil.rmtree(target.temp_dir, ignore_errors=True)
            if not args.keep_database:
                try:
                    drop_database(target)
                except Exception as exc:  # noqa: BLE001 - report, but the run's result stands
                    print(f"could not drop {target.database}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
