"""The caller's inbox: messages (Communications) addressed to them, marked read and done."""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from api.database import get_db
from api.v1.common import PageArgs, error_responses, next_link
from careplan.reminders import service

URL_PREFIX = "/inbox"
blp = Blueprint("v1_inbox", __name__, description="Messages and reminders addressed to the caller")

MESSAGE_EXAMPLE = {"id": "c81f", "status": "completed", "category": ["reminder"], "sent": "2026-11-20T12:30:00Z",
                   "subject": "Patient/f3a9c2", "about": ["CarePlan/cp1"],
                   "text": "Follow-up due: CarePlan/cp1 activity a1.", "read_at": None, "done_at": None,
                   "resource": {"resourceType": "Communication", "id": "c81f", "status": "completed"}}


class InboxMessageSchema(ma.Schema):
    """A message in the inbox."""

    id = ma.fields.String(required=True)
    status = ma.fields.String(allow_none=True)
    category = ma.fields.List(ma.fields.String(), metadata={"example": ["reminder"]})
    sent = ma.fields.String(allow_none=True)
    subject = ma.fields.String(allow_none=True, metadata={"description": "The patient it is about (reference)"})
    about = ma.fields.List(ma.fields.String())
    text = ma.fields.String(allow_none=True)
    read_at = ma.fields.String(allow_none=True)
    done_at = ma.fields.String(allow_none=True)
    resource = ma.fields.Dict(required=True, metadata={"description": "The FHIR Communication"})


class InboxPageSchema(ma.Schema):
    """A page of the inbox, newest first."""

    items = ma.fields.List(ma.fields.Nested(InboxMessageSchema), required=True)
    next = ma.fields.String(allow_none=True)


@blp.route("")
class Inbox(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, InboxPageSchema, example={"items": [MESSAGE_EXAMPLE], "next": None})
    @error_responses(blp, 400, 401, 403)
    def get(self, args):
        """List the messages addressed to the caller (a person, or a partner's organisation), newest first"""
        page = service.inbox(get_db(), limit=args["limit"], cursor=args.get("cursor"))
        return {"items": page.items, "next": next_link(page.next_cursor)}


@blp.route("/<string:message_id>/read")
class MarkRead(MethodView):
    @blp.response(200, InboxMessageSchema, example={**MESSAGE_EXAMPLE, "read_at": "2026-11-20T13:02:11Z"})
    @error_responses(blp, 401, 403, 404)
    def post(self, message_id):
        """Record that the caller read a message addressed to them"""
        return service.mark(get_db(), communication_id=message_id, read=True)


@blp.route("/<string:message_id>/done")
class MarkDone(MethodView):
    @blp.response(200, InboxMessageSchema, example={**MESSAGE_EXAMPLE, "read_at": "2026-11-20T13:02:11Z",
                                                    "done_at": "2026-11-20T13:05:40Z"})
    @error_responses(blp, 401, 403, 404)
    def post(self, message_id):
        """Record that the caller dealt with a message addressed to them (it is read, too)"""
        return service.mark(get_db(), communication_id=message_id, read=True, done=True)
