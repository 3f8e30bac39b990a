"""Configuration is read from the environment in one place."""

import pytest

from careplan.config import ConfigError, from_env


def test_defaults_to_sqlite_in_instance():
    settings = from_env({})
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("instance/careplan.sqlite3")


@pytest.mark.parametrize("given", ["postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg2://u@h/db"])
def test_postgresql_urls_use_psycopg3(given):
    assert from_env({"CAREPLAN_DATABASE_URL": given}).database_url == "postgresql+psycopg://u@h/db"


def test_bad_numbers_are_refused_with_the_variable_name():
    with pytest.raises(ConfigError, match="CAREPLAN_MAX_BODY_BYTES"):
        from_env({"CAREPLAN_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ConfigError, match="positive"):
        from_env({"CAREPLAN_MAX_PAGE_SIZE": "0"})
