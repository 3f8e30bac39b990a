"""Load transaction/batch Bundles and NDJSON files into the store, resumably (``careplan import``).

Work is split into units, each committed on its own: a transaction Bundle is one unit; a batch Bundle is one unit
per entry (each entry is its own transaction, as over HTTP); an NDJSON file is one unit per ``batch_size`` lines,
written as one transaction of updates (lines with an id) and creates (lines without). When a line spoils its
chunk's transaction, the chunk's lines go in one at a time so that only the bad lines fail.

A state file per input (and database) records the file's content hash, how far the import got, and which entries
or lines failed. A second run skips what is committed, tries the failed units again (a conditional reference may
resolve once its target file is loaded), and skips a finished file entirely; a changed file starts afresh. The state
is saved after every transaction unit, every ``batch_size`` batch entries, and when the run stops (Ctrl-C
included), so a run killed outright repeats at most that much, which conditional creates and updates absorb.

Failures are reported by position (entry index or line number), HTTP status, issue code, FHIRPath expression and
the kind of error, never with the diagnostics text, which can quote patient data.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from careplan import jsonutil
from careplan.config import PROJECT_ROOT
from careplan.db import Database
from careplan.errors import FhirError, UnknownResourceType
from careplan.store import bundle
from careplan.store.bundle import EntryError, EntryOutcome

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
DEFAULT_BATCH_SIZE = 500
DEFAULT_STATE_DIR = PROJECT_ROOT / "instance" / "import-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class Failure:
    """Where an import failed and why, without patient data."""

    file: str
    status: int
    reason: str
    entry: int | None = None  # index in the Bundle
    line: int | None = None  # line number in an NDJSON file
    code: str | None = None
    expression: str | None = None

    def describe(self) -> str:
        """Return a one-line description for the operator."""
        where = self.file
        if self.entry is not None:
            where += f" entry {self.entry}"
        if self.line is not None:
            where += f" line {self.line}"
        detail = f"{self.status} {self.code}" if self.code else str(self.status)
        if self.expression:
            detail += f" at {self.expression}"
        return f"{where}: {detail}: {self.reason}"


@dataclass
class ImportSummary:
    """What an import did, counted in resources."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0  # entries of unsupported types left out on request
    files: int = 0
    files_already_done: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def count(self, outcome: EntryOutcome) -> None:
        """Add one entry's outcome to the counts."""
        if outcome.skipped:
            self.skipped += 1
        elif outcome.failed:
            self.failed += 1
        elif outcome.created:
            self.created += 1
        elif outcome.unchanged:
            self.unchanged += 1
        else:
            self.updated += 1


class ImportFileError(Exception):
    """An input file cannot be imported at all (unreadable, not JSON, not a transaction or batch Bundle)."""


@dataclass
class _State:
    """How far earlier runs got with one file: committed up to ``done``, except the ``failed`` positions."""

    path: Path
    sha256: str
    done: int = 0  # entries (batch), lines (NDJSON) or Bundles (transaction) gone through
    failed: set[int] = field(default_factory=set)  # entry indices (batch) or line numbers (NDJSON) to retry
    finished: bool = False

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"version": STATE_VERSION, "sha256": self.sha256, "done": self.done,
                                         "failed": sorted(self.failed), "finished": self.finished}))
        os.replace(temporary, self.path)  # atomic: a crash leaves the old state or the new one


def state_path(file: Path, state_dir: Path, database_url: str) -> Path:
    """Return where the state of importing file into database_url is kept."""
    # The database is part of the key (hashed: the URL may hold a password), so importing elsewhere starts afresh.
    key = hashlib.sha256(f"{file.resolve()}\n{database_url}".encode()).hexdigest()[:16]
    return state_dir / f"{file.name}.{key}.import-state.json"


def _load_state(path: Path, sha256: str) -> _State:
    try:
        saved = json.loads(path.read_text())
        if saved.get("sha256") == sha256 and saved.get("version") == STATE_VERSION:
            return _State(path, sha256, done=int(saved["done"]), failed={int(n) for n in saved.get("failed", [])},
                          finished=bool(saved.get("finished")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no usable state: start afresh
    return _State(path, sha256)  # (or the file changed since, and its earlier progress means nothing)


def _digest(path: Path) -> tuple[str, int]:
    """Return the file's SHA-256 and its number of lines."""
    digest, lines, last = hashlib.sha256(), 0, b"\n"
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
            last = block[-1:]
    return digest.hexdigest(), lines + (last != b"\n")


class Importer:
    """Import files into one database, keeping resumable state and a running summary."""

    def __init__(self, db: Database, *, batch_size: int = DEFAULT_BATCH_SIZE, skip_unsupported: bool = False,
                 state_dir: Path = DEFAULT_STATE_DIR, on_file: Callable[[str, int], None] | None = None,
                 progress: Callable[[int], None] | None = None, on_failure: Callable[[Failure], None] | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.db, self.batch_size, self.skip_unsupported = db, batch_size, skip_unsupported
        self.state_dir = state_dir
        self.on_file = on_file or (lambda name, total: None)
        self.progress = progress or (lambda n: None)
        self.on_failure = on_failure or (lambda failure: None)
        self.summary = ImportSummary()

    def run(self, paths: list[Path]) -> ImportSummary:
        """Import every file in order; a failing unit or file is reported and the import goes on."""
        started = time.perf_counter()
        try:
            for path in paths:
                self.summary.files += 1
                try:
                    self.import_file(path)
                except ImportFileError as error:
                    self._fail(Failure(path.name, 400, str(error)))
        finally:
            self.summary.seconds += time.perf_counter() - started
        return self.summary

    def import_file(self, path: Path) -> None:
        """Import one file, resuming after what earlier runs committed."""
        try:
            sha256, lines = _digest(path)
        except OSError as error:
            raise ImportFileError(f"cannot read the file ({error.strerror})") from None
        state = _load_state(state_path(path, self.state_dir, self.db.url), sha256)
        if state.finished:
            self.summary.files_already_done += 1
            return
        completed = False
        try:
            if path.suffix.lower() in NDJSON_SUFFIXES:
                self._ndjson(path, lines, state)
            else:
                self._bundle(path, state)
            completed = True
        finally:
            # Saved however the run stops (Ctrl-C included), so the next run resumes where this one got to.
            state.finished = completed and state.done > 0 and not state.failed
            state.save()

    # -- Bundles ---------------------------------------------------------------------------------------------

    def _bundle(self, path: Path, state: _State) -> None:
        try:
            document = jsonutil.loads(path.read_bytes())
        except jsonutil.JSONSyntaxError as error:
            hint = f"; a file of one resource a line must be named *{NDJSON_SUFFIXES[0]}" \
                if "Extra data" in str(error) else ""
            raise ImportFileError(f"not valid JSON: {error}{hint}") from None
        try:
            kind, entries = bundle.check_bundle(document)
        except FhirError as error:
            raise ImportFileError(error.issues[0].diagnostics) from None
        self.on_file(path.name, len(entries))
        if kind == "transaction":
            if self._transaction(path.name, entries):
                state.done = 1
                state.save()
            self.progress(len(entries))
            return
        self._batch(path.name, entries, state)

    def _transaction(self, name: str, entries: list) -> bool:
        """Run entries as one transaction; report the failing entry. Return whether it committed."""
        try:
            outcomes = bundle.transaction(self.db, entries, skip_unsupported=self.skip_unsupported)
        except EntryError as error:
            self._report(self._failure(name, error, entries))
            skipped = sum(1 for raw in entries if self._skipped(raw))
            self.summary.skipped += skipped
            self.summary.failed += len(entries) - skipped
            return False
        for outcome in outcomes:
            self.summary.count(outcome)
        return True

    def _batch(self, name: str, entries: list, state: _State) -> None:
        retry = sorted(n for n in state.failed if n < len(entries))
        self.progress(state.done - len(retry))

        def on_entry(index: int, outcome: EntryOutcome) -> None:
            self.summary.count(outcome)
            state.failed.discard(index)
            if isinstance(outcome.error, EntryError):
                state.failed.add(index)
                self._report(self._failure(name, outcome.error, entries))
            state.done = max(state.done, index + 1)
            self.progress(1)
            if (index + 1) % self.batch_size == 0:
                state.save()

        indices = [*retry, *range(state.done, len(entries))]
        bundle.batch(self.db, entries, indices=indices, skip_unsupported=self.skip_unsupported, on_entry=on_entry)
        state.done = max(state.done, len(entries), 1)

    def _skipped(self, raw: object) -> bool:
        test = bundle.skipped_types(self.skip_unsupported)
        return bool(test and test(bundle.entry_type(raw)))

    # -- NDJSON ----------------------------------------------------------------------------------------------

    def _ndjson(self, path: Path, lines: int, state: _State) -> None:
        self.on_file(path.name, lines)
        retry = set(state.failed)
        self.progress(state.done - len(retry))
        chunk: list[tuple[int, dict]] = []
        for number, entry in self._lines(path, wanted=lambda n: n in retry or n > state.done):
            if entry is None:
                state.failed.add(number)
                self.progress(1)
            else:
                chunk.append((number, entry))
            if len(chunk) >= self.batch_size:
                self._ndjson_unit(path.name, chunk, state)
                state.done = max(state.done, number)
                state.save()
                self.progress(len(chunk))
                chunk = []
        if chunk:
            self._ndjson_unit(path.name, chunk, state)
        state.done = max(state.done, lines, 1)
        if chunk:
            state.save()
            self.progress(len(chunk))

    def _lines(self, path: Path, *, wanted: Callable[[int], bool]) -> Iterator[tuple[int, dict | None]]:
        """Yield (line number, entry) for the wanted lines; an unusable line is reported and yields None."""
        with path.open("rb") as stream:
            for number, raw in enumerate(stream, start=1):
                if not wanted(number) or not raw.strip():
                    continue
                try:
                    resource = jsonutil.loads(raw)
                except jsonutil.JSONSyntaxError:
                    self._fail(Failure(path.name, 400, "the line is not valid JSON", line=number, code="structure"))
                    yield number, None
                    continue
                if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                    self._fail(Failure(path.name, 400, "the line is not a FHIR resource", line=number,
                                       code="structure"))
                    yield number, None
                    continue
                yield number, _ndjson_entry(resource)

    def _ndjson_unit(self, name: str, chunk: list[tuple[int, dict]], state: _State) -> None:
        numbers = [number for number, _ in chunk]
        entries = [entry for _, entry in chunk]
        try:
            outcomes = bundle.transaction(self.db, entries, skip_unsupported=self.skip_unsupported)
        except EntryError:
            # One bad line spoils the chunk's transaction: put the lines in one by one so only bad lines fail.
            outcomes = bundle.batch(self.db, entries, skip_unsupported=self.skip_unsupported)
        for outcome, number in zip(outcomes, numbers):
            self.summary.count(outcome)
            state.failed.discard(number)
            if isinstance(outcome.error, EntryError):
                state.failed.add(number)
                self._report(self._failure(name, outcome.error, entries, line=number))

    # -- failures --------------------------------------------------------------------------------------------

    def _failure(self, name: str, error: EntryError, entries: list, *, line: int | None = None) -> Failure:
        cause = error.cause
        reason = (type(cause).__doc__ or type(cause).__name__).strip().rstrip(".")
        resource_type = bundle.entry_type(entries[error.index]) if 0 <= error.index < len(entries) else None
        if isinstance(cause, UnknownResourceType) and resource_type:
            reason += f" ({resource_type})"
        issue = error.issues[0]
        if line is None:
            return Failure(name, error.status, reason, entry=error.index, code=issue.code, expression=issue.expression)
        # A line is not a Bundle entry: name the element from the resource, as a single create would.
        expression = issue.expression
        if expression and resource_type:
            expression = expression.replace(f"Bundle.entry[{error.index}].resource", resource_type, 1)
        return Failure(name, error.status, reason, line=line, code=issue.code, expression=expression)

    def _fail(self, failure: Failure) -> None:
        self.summary.failed += 1
        self._report(failure)

    def _report(self, failure: Failure) -> None:
        self.summary.failures.append(failure)
        self.on_failure(failure)


def _ndjson_entry(resource: dict) -> dict:
    """Turn one NDJSON resource into a Bundle entry: an update when it has an id, else a create."""
    resource_type = resource["resourceType"]
    if isinstance(resource.get("id"), str):
        return {"resource": resource, "request": {"method": "PUT", "url": f"{resource_type}/{resource['id']}"}}
    return {"resource": resource, "request": {"method": "POST", "url": resource_type}}
