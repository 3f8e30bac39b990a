"""The coordination API at /api/v1: flask-smorest blueprints over careplan.coordination, documented in OpenAPI 3.

OpenAPI at /api/v1/openapi.json and Swagger UI at /docs (both public). Swagger UI's scripts come from a CDN by
default (``OPENAPI_SWAGGER_UI_URL``, or the ``CAREPLAN_SWAGGER_UI_URL`` environment variable): an air-gapped
deployment points it at a self-hosted copy of swagger-ui-dist.
"""

from __future__ import annotations

import os
import threading

from flask import Flask
from flask_smorest import Api

from api.v1 import errors

DEFAULT_SWAGGER_UI_URL = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"


class CoordinationApi(Api):
    """flask-smorest's Api, with its OpenAPI document written when first read and errors answered by api.v1.errors.

    Documenting the blueprints (marshmallow schemas to JSON Schema, deep copies of every operation) was 85% of
    building an app; it now waits for the first read of the document (/api/v1/openapi.json, /docs, `flask openapi`),
    which sees the same document as before. The app-wide HTTPException handler is replaced so that api.v1.errors
    answers /api/v1 only.
    """

    ERROR_SCHEMA = errors.ErrorSchema

    def __init__(self, *args, **kwargs):
        self._undocumented: list[tuple] = []
        self._documenting = threading.Lock()
        super().__init__(*args, **kwargs)

    @property
    def spec(self):
        """Return the OpenAPI document, first adding the blueprints registered since it was last read."""
        with self._documenting:
            pending, self._undocumented = self._undocumented, []
            for blp, name, parameters in pending:
                blp.register_views_in_doc(self, self._app, self._spec, name=name, parameters=parameters)
                self._spec.tag({"name": name, "description": blp.description})
        return self._spec

    @spec.setter
    def spec(self, value):
        self._spec = value

    def register_blueprint(self, blp, *, parameters=None, **options):
        """Register blp in the app now and in the OpenAPI document when the document is next read."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        with self._documenting:
            self._undocumented.append((blp, name, parameters))

    def _register_error_handlers(self):
        errors.init_app(self._app)


def init_app(app: Flask) -> Api:
    """Register the coordination API, its documentation routes and its error handlers."""
    app.config.setdefault("API_TITLE", "careplan coordination API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "api/v1/openapi.json")
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", "docs")
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL",
                          os.environ.get("CAREPLAN_SWAGGER_UI_URL") or DEFAULT_SWAGGER_UI_URL)
    api = CoordinationApi(spec_kwargs={
        "servers": [{"url": "/", "description": "this server"}],
        "info": {"description": "Care coordination over the FHIR store: enrol patients, build coordinated care "
                               "plans from the practice catalogue, work from a tier-ordered worklist. "
                               "Every request needs a bearer token from /oauth/token."},
    })
    api.init_app(app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    api.spec.options["security"] = [{"bearerAuth": []}]
    from api.v1 import care_plans, partners, patients, practices, worklist

    for module in (patients, care_plans, worklist, partners, practices):
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
    from api.v1 import partner, referrals

    for module in (referrals, partner):
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
    from api.v1 import inbox, notifications, reminders

    for module in (reminders, inbox, notifications):
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
    from api.v1 import measures

    api.register_blueprint(measures.blp, url_prefix=f"/api/v1{measures.URL_PREFIX}")
    return api
