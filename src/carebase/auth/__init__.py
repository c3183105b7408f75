"""Who may do what: users, OAuth 2.0 / SMART on FHIR, scopes, access policy, audit chain."""
