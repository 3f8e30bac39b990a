"""The store writes versions and their search index in one transaction."""

import pytest
from sqlalchemy import func, select

from careplan.errors import InvalidResource
from careplan.models import Resource, ResourceVersion, SearchReference, SearchString, SearchToken
from careplan.store import service
from tests.factories import careplan, patient


def _count(database, model, **where):
    with database.reading() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return session.scalar(query)


def _tokens(database, param):
    with database.reading() as session:
        return set(session.execute(select(SearchToken.system, SearchToken.code).where(SearchToken.param == param)))


def test_create_writes_index_rows(database):
    service.create(database, resource=patient())
    assert _tokens(database, "identifier") == {("https://careplan.example.org/mrn", "MRN-1001")}
    with database.reading() as session:
        families = set(session.scalars(select(SearchString.normalized).where(SearchString.param == "family")))
    assert families == {"angstrom"}


def test_update_replaces_index_rows_and_delete_clears_them(database):
    service.update(database, resource_type="Patient", resource_id="p1", resource=patient(id="p1"))
    changed = patient(id="p1", identifier=[{"system": "urn:x", "value": "NEW"}])
    service.update(database, resource_type="Patient", resource_id="p1", resource=changed)
    assert _tokens(database, "identifier") == {("urn:x", "NEW")}
    service.delete(database, resource_type="Patient", resource_id="p1")
    assert _tokens(database, "identifier") == set()
    assert _count(database, ResourceVersion) == 3


def test_references_are_indexed_for_reverse_lookups(database):
    service.create(database, resource=careplan())
    with database.reading() as session:
        rows = set(session.execute(select(SearchReference.param, SearchReference.target_type, SearchReference.target_id)
                                   .where(SearchReference.param == "subject")))
    assert rows == {("subject", "Patient", "p1")}


def test_a_failed_write_leaves_nothing_behind(database):
    with pytest.raises(RuntimeError):
        with database.writing() as session:
            service.create_in(session, resource=patient())
            raise RuntimeError("crash after the insert, before commit")
    assert _count(database, Resource) == 0
    assert _count(database, SearchToken) == 0
    assert _count(database, ResourceVersion) == 0


def test_invalid_resource_is_not_stored(database):
    with pytest.raises(InvalidResource):
        service.create(database, resource=patient(gender="sometimes"))
    assert _count(database, Resource) == 0


def test_last_updated_is_timezone_aware_utc(database):
    stored = service.create(database, resource=patient()).stored
    assert stored.last_updated.utcoffset().total_seconds() == 0
    read = service.read(database, resource_type="Patient", resource_id=stored.id)
    assert read.last_updated == stored.last_updated
    assert read.content["meta"]["lastUpdated"].endswith("Z")
