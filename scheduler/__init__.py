"""Follow-up reminder scheduling: APScheduler as the clock, the database as the queue."""
