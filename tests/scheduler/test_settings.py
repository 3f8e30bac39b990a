"""The scheduler's settings from the environment."""

import pytest

from careplan.config import ConfigError, from_env


def test_defaults():
    settings = from_env({})
    assert (settings.scheduler_interval_seconds, settings.reminder_lease_seconds, settings.delivery_retry_hours,
            settings.scheduler_batch_size, settings.webhook_timeout_seconds) == (15.0, 120.0, 26.0, 200, 10.0)
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls) == (None, 25, False)


def test_environment_overrides():
    settings = from_env({"CAREPLAN_SCHEDULER_INTERVAL_SECONDS": "0.5", "CAREPLAN_REMINDER_LEASE_SECONDS": "5",
                         "CAREPLAN_DELIVERY_RETRY_HOURS": "48", "CAREPLAN_SMTP_HOST": "mail.example.org",
                         "CAREPLAN_SMTP_PORT": "587", "CAREPLAN_SMTP_STARTTLS": "true",
                         "CAREPLAN_SMTP_USERNAME": "careplan", "CAREPLAN_SMTP_PASSWORD": "pw",
                         "CAREPLAN_SMTP_FROM": "reminders@example.org", "CAREPLAN_WEBHOOK_TIMEOUT_SECONDS": "3"})
    assert (settings.scheduler_interval_seconds, settings.reminder_lease_seconds, settings.delivery_retry_hours) == (
        0.5, 5.0, 48.0)
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls, settings.smtp_username,
            settings.smtp_password, settings.smtp_from, settings.webhook_timeout_seconds) == (
        "mail.example.org", 587, True, "careplan", "pw", "reminders@example.org", 3.0)


@pytest.mark.parametrize("name, value", [("CAREPLAN_SCHEDULER_INTERVAL_SECONDS", "soon"),
                                         ("CAREPLAN_REMINDER_LEASE_SECONDS", "0"),
                                         ("CAREPLAN_DELIVERY_RETRY_HOURS", "-1"),
                                         ("CAREPLAN_SMTP_PORT", "smtp")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        from_env({name: value})
