"""The careplan web application: FHIR R4 REST at /fhir, health checks, and the coordination API."""

from __future__ import annotations

from flask import Flask

from careplan import config as careplan_config


def create_app(test_config: dict | None = None) -> Flask:
    """Create the careplan Flask application."""
    app = Flask(__name__, instance_relative_config=True)
    settings = careplan_config.from_env()
    if test_config and "CAREPLAN_DATABASE_URL" in test_config:
        settings = careplan_config.Settings(
            **{**vars(settings), "database_url": careplan_config.normalize_database_url(
                test_config["CAREPLAN_DATABASE_URL"])}
        )
    app.config.from_mapping(
        CAREPLAN_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    if test_config is not None:
        app.config.update(test_config)

    from api import database, health
    from api.fhir import blueprint as fhir_blueprint
    from api.fhir import errors as fhir_errors

    database.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(fhir_blueprint.bp)
    fhir_errors.init_app(app)

    from api import access, auth, oauth, security_headers

    # Order matters: CORS preflights are answered before authentication, which runs before every other hook.
    security_headers.init_app(app)
    auth.init_app(app)
    access.init_app(app)
    app.register_blueprint(oauth.bp)
    from api import dashboard

    app.register_blueprint(dashboard.bp)

    from api import v1

    v1.init_app(app)  # after the /fhir error handlers, which its own wrap for paths outside /api/v1
    return app
