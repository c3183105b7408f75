"""HTTP edge: the ASGI app, FHIR REST routes and operations."""
