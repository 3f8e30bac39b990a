"""Follow-up reminders: durable rows in the database, written by the rules and sent by the scheduler's outbox."""
