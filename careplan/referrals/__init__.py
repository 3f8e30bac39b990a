"""Closed-loop referrals to partner agencies (issue 6): the Task state machine, service levels and code systems.

``workflow`` (the rules the store enforces on every write, and the closing effects), ``sla`` (business-day service
levels), ``codes`` (the referral code systems shipped in fhir/catalogue/).
"""
