"""The caller's notification settings: time zone, quiet hours, digest time, and webhook or e-mail channels."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import error_responses, text
from careplan.reminders import service

URL_PREFIX = "/notification-settings"
blp = Blueprint("v1_notifications", __name__, description="Where and when the caller gets reminders")

HHMM = ma.validate.Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", error="A local time like 07:30.")

CHANNEL_EXAMPLE = {"id": 3, "channel": "webhook", "address": "https://agency.example.org/careplan-hook",
                   "created_at": "2026-11-20T13:00:00+00:00"}
SETTINGS_EXAMPLE = {"recipient": "Practitioner/coord-1", "timezone": "America/Toronto", "quiet_start": "21:00",
                    "quiet_end": "08:00", "digest_time": "07:30", "channels": [CHANNEL_EXAMPLE]}


class NotificationChannelSchema(ma.Schema):
    """A webhook URL or e-mail address reminders are also sent to."""

    id = ma.fields.Integer(dump_only=True)
    channel = ma.fields.String(required=True, validate=ma.validate.OneOf(("webhook", "email")))
    address = text(required=True, max_length=500, description="Webhook URL (http/https) or e-mail address",
                   example="https://agency.example.org/careplan-hook")
    secret = ma.fields.String(dump_only=True, metadata={
        "description": "Webhook signing key (HMAC-SHA256 of `<timestamp>.<body>`), shown only in this answer"})
    created_at = ma.fields.DateTime(dump_only=True)


class NotificationSettingsSchema(ma.Schema):
    """Local time zone, quiet hours and daily digest time (local HH:MM)."""

    recipient = ma.fields.String(dump_only=True, metadata={"example": "Practitioner/coord-1"})
    timezone = text(required=True, max_length=64, description="IANA time zone", example="America/Toronto")
    quiet_start = ma.fields.String(allow_none=True, load_default=None, validate=HHMM, metadata={"example": "21:00"})
    quiet_end = ma.fields.String(allow_none=True, load_default=None, validate=HHMM, metadata={"example": "08:00"})
    digest_time = ma.fields.String(load_default="07:30", validate=HHMM, metadata={"example": "07:30"})
    channels = ma.fields.List(ma.fields.Nested(NotificationChannelSchema), dump_only=True)


@blp.route("")
class Settings(MethodView):
    @blp.response(200, NotificationSettingsSchema, example=SETTINGS_EXAMPLE)
    @error_responses(blp, 401, 403)
    def get(self):
        """Show the caller's notification settings and channels"""
        return service.get_settings(get_db())

    @blp.arguments(NotificationSettingsSchema, example={"timezone": "America/Toronto", "quiet_start": "21:00",
                                                       "quiet_end": "08:00", "digest_time": "07:30"})
    @blp.response(200, NotificationSettingsSchema, example=SETTINGS_EXAMPLE)
    @error_responses(blp, 400, 401, 403, 422)
    def put(self, data):
        """Set the caller's time zone, quiet hours and digest time (reminders already scheduled move on their
        next change)"""
        return service.put_settings(get_db(), timezone_name=data["timezone"], quiet_start=data.get("quiet_start"),
                                    quiet_end=data.get("quiet_end"), digest_time=data.get("digest_time"))


@blp.route("/channels")
class Channels(MethodView):
    @blp.arguments(NotificationChannelSchema, example={"channel": "webhook",
                                                       "address": "https://agency.example.org/careplan-hook"})
    @blp.response(201, NotificationChannelSchema, example={**CHANNEL_EXAMPLE, "secret": "kq3...generated...Zx8"})
    @error_responses(blp, 400, 401, 403, 422)
    def post(self, data):
        """Add a webhook (its signing secret is returned once) or an e-mail address"""
        return service.add_channel(get_db(), channel=data["channel"], address=data["address"])


@blp.route("/channels/<int:channel_id>")
class ChannelById(MethodView):
    @blp.response(200, NotificationSettingsSchema, example={**SETTINGS_EXAMPLE, "channels": []})
    @error_responses(blp, 401, 403, 404)
    def delete(self, channel_id):
        """Stop sending reminders to one of the caller's channels; answer the settings left"""
        service.remove_channel(get_db(), channel_id=channel_id)
        return service.get_settings(get_db())
