"""Helpers for driving the /fhir endpoints."""

from __future__ import annotations

import json

import pytest

from careplan import jsonutil
from tests.factories import FHIR_JSON


class Fhir:
    """A thin FHIR client over the Flask test client."""

    def __init__(self, client):
        self.client = client

    def _body(self, body) -> str:
        return body if isinstance(body, (str, bytes)) else jsonutil.dumps(body)

    def create(self, resource, headers=None):
        return self.client.post(f"/fhir/{json.loads(self._body(resource))['resourceType']}",
                                data=self._body(resource), content_type=FHIR_JSON, headers=headers or {})

    def post(self, path, body, headers=None, content_type=FHIR_JSON):
        return self.client.post(path, data=self._body(body), content_type=content_type, headers=headers or {})

    def put(self, path, body, headers=None, content_type=FHIR_JSON):
        return self.client.put(path, data=self._body(body), content_type=content_type, headers=headers or {})

    def patch(self, path, body, headers=None, content_type="application/json-patch+json"):
        return self.client.patch(path, data=self._body(body), content_type=content_type, headers=headers or {})

    def get(self, path, headers=None):
        return self.client.get(path, headers=headers or {})

    def delete(self, path, headers=None):
        return self.client.delete(path, headers=headers or {})


def body(response) -> dict:
    """Parse a response body keeping decimals exact."""
    return jsonutil.loads(response.get_data())


def outcome(response) -> dict:
    """Return the OperationOutcome of an error response, checking its shape."""
    assert response.mimetype == FHIR_JSON
    document = body(response)
    assert document["resourceType"] == "OperationOutcome", document
    assert document["issue"], document
    return document


@pytest.fixture
def fhir(client) -> Fhir:
    return Fhir(client)
