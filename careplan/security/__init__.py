"""Protect sensitive health data: security labels, consent, access policy and audit."""
