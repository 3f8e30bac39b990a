"""Care coordination services over the FHIR store: enrolment, care plans, the worklist.

Every function is keyword-only, owns its transaction, and reads and writes through careplan.store.service and
careplan.search.engine, so the caller's access policy and the audit trail apply as they do on /fhir. No Flask here.
"""
