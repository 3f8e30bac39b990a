"""Attach careplan's Database to the Flask app and hand it to views."""

from __future__ import annotations

from flask import Flask, current_app

from careplan.config import Settings
from careplan.db import Database

EXTENSION_KEY = "careplan.database"


def init_app(app: Flask) -> None:
    """Create the app's Database from its settings."""
    settings: Settings = app.config["CAREPLAN_SETTINGS"]
    app.extensions[EXTENSION_KEY] = Database(settings.database_url, echo=settings.database_echo)


def get_db() -> Database:
    """Return the current app's Database."""
    return current_app.extensions[EXTENSION_KEY]


def get_settings() -> Settings:
    """Return the current app's settings."""
    return current_app.config["CAREPLAN_SETTINGS"]
