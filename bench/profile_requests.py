#!/usr/bin/env python3
"""Profile careplan's create and read-by-id in-process (Flask test client, no HTTP server) with cProfile.

    .venv/bin/python bench/profile_requests.py --sqlite            # temporary SQLite file
    .venv/bin/python bench/profile_requests.py                     # fresh PostgreSQL database careplan_bench
    .venv/bin/python bench/profile_requests.py --stage             # time each stage of a create separately

Prints the functions with the most cumulative time, and the time per request; the profile files go to
bench/results/. It measures where one request's CPU goes; bench_fhir_http.py measures throughput.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bench_fhir_http as bench  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--database-url")
    parser.add_argument("--pg-admin-url", default=bench.DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--requests", type=int, default=300, help="profiled creates, and as many reads")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--stage", action="store_true", help="also time the parts of a create and of a read "
                        "(parsing, validation, index extraction, token check, store calls) one by one")
    args = parser.parse_args()
    args.keep_database = False
    target = bench.prepare_database(args)
    try:
        bench.migrate(target)
        credentials = bench.register_client(target)
        os.environ["CAREPLAN_DATABASE_URL"] = target.careplan_url
        from api import create_app

        app = create_app()
        client = app.test_client()
        rng = random.Random(1)
        bodies = [json.dumps(bench.make_patient(rng, n)) for n in range(args.requests + 50)]
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if credentials is not None:
            response = client.post("/oauth/token", auth=credentials,
                                   data={"grant_type": "client_credentials", "scope": bench.BENCH_SCOPES})
            assert response.status_code == 200, response.get_data(as_text=True)
            headers["Authorization"] = f"Bearer {response.json['access_token']}"
        ids = []
        for body in bodies[:50]:  # warm-up: model classes, compiled search expressions, pool
            response = client.post("/fhir/Patient", data=body, headers=headers)
            assert response.status_code == 201, response.get_data(as_text=True)
            ids.append(response.json["id"])
        for res_id in ids:
            client.get(f"/fhir/Patient/{res_id}", headers=headers)

        def creates():
            for body in bodies[50:]:
                response = client.post("/fhir/Patient", data=body, headers=headers)
                ids.append(response.json["id"])

        def reads():
            for res_id in ids[:args.requests]:
                client.get(f"/fhir/Patient/{res_id}", headers=headers)

        bench.RESULTS_DIR.mkdir(exist_ok=True)
        for name, work in (("create", creates), ("read", reads)):
            profiler = cProfile.Profile()
            began = time.perf_counter()
            profiler.enable()
            work()
            profiler.disable()
            elapsed = time.perf_counter() - began
            path = bench.RESULTS_DIR / f"profile-{name}-{target.backend}.pstats"
            profiler.dump_stats(path)
            print(f"\n=== {name}: {1000 * elapsed / args.requests:.2f} ms per request under cProfile "
                  f"({args.requests} requests, {target.backend}); profile in {path}")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)

        if args.stage:
            stage_timings(app, bodies[50:], args.requests, headers)
        app.extensions["careplan.database"].dispose()
        return 0
    finally:
        if target.temp_dir is not None:
            shutil.rmtree(target.temp_dir, ignore_errors=True)
        bench.drop_database(target)


def stage_timings(app, bodies: list[str], count: int, headers: dict) -> None:
    """Time the parts of a create and of a read one by one, without the profiler's overhead."""
    from unittest import mock

    from sqlalchemy import select, text
    from werkzeug.test import EnvironBuilder

    from careplan import jsonutil
    from careplan.models import Resource
    from careplan.search import extract
    from careplan.store import index, service
    from careplan.validation import validate_resource

    database = app.extensions["careplan.database"]
    parsed = [jsonutil.loads(body) for body in bodies[:count]]
    with database.reading() as session:
        ids = list(session.scalars(select(Resource.res_id).where(Resource.res_type == "Patient").limit(count)))
    token = headers.get("Authorization", "").removeprefix("Bearer ")

    def wsgi(method: str, path: str, body: str | None = None):
        environ = EnvironBuilder(path=path, method=method, data=body, headers=headers).get_environ()
        return lambda: b"".join(app(environ, lambda status, response_headers, exc_info=None: None))

    def timed(name: str, calls: list) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for call in calls:
            call()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"  {name:<58} {1000 * wall / len(calls):7.3f} {1000 * cpu / len(calls):7.3f}")

    print(f"\n=== parts of a create and a read, ms per request ({count} each, no profiler; {database.dialect})")
    print(f"  {'':<58} {'wall':>7} {'CPU':>7}")
    timed("create: whole request (WSGI call, no HTTP server)",
          [wsgi("POST", "/fhir/Patient", body) for body in bodies[:count]])
    timed("  jsonutil.loads (strict parse)", [lambda b=b: jsonutil.loads(b) for b in bodies[:count]])
    timed("  validate_resource", [lambda p=p: validate_resource(p, expected_type="Patient") for p in parsed])
    timed("  search index extraction", [lambda p=p: extract.extract(p) for p in parsed])
    timed("  service.create (validate, store, index, commit)",
          [lambda p=p: service.create(database, resource=p, resource_type="Patient") for p in parsed])
    with mock.patch.object(index, "replace", lambda *args, **kwargs: None):
        timed("  service.create with the index writes stubbed out",
              [lambda p=p: service.create(database, resource=p, resource_type="Patient") for p in parsed])
    timed("read: whole request (WSGI call, no HTTP server)", [wsgi("GET", f"/fhir/Patient/{i}") for i in ids])
    if token:
        from careplan.auth.tokens import verify_access_token

        with app.test_request_context("/fhir/Patient", headers=headers):
            from api.auth import token_settings

            settings, oidc = token_settings(), app.extensions.get("careplan.auth")
            timed("  verify_access_token (every request)",
                  [lambda: verify_access_token(database, token, settings=settings, oidc=oidc)] * count)
    timed("  service.read", [lambda i=i: service.read(database, resource_type="Patient", resource_id=i) for i in ids])
    statement = text("SELECT content FROM resource WHERE res_type = 'Patient' AND res_id = :id")

    def core_select(res_id: str):
        with database.engine.connect() as connection:
            return connection.execute(statement, {"id": res_id}).one()

    timed("  for comparison: Core SELECT content on the same engine", [lambda i=i: core_select(i) for i in ids])
    stored = [service.read(database, resource_type="Patient", resource_id=i).content for i in ids]
    timed("  jsonutil.dumps of the stored Patient", [lambda c=c: jsonutil.dumps(c) for c in stored])


if __name__ == "__main__":
    sys.exit(main())
