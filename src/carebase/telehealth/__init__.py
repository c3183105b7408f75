"""Telemedicine: scheduling on FHIR Schedule/Slot/Appointment, visit rooms with a waiting room,
WebRTC signalling over WebSocket (across workers through PostgreSQL LISTEN/NOTIFY or Redis),
visit chat and messages as FHIR Communication, and the visit's Encounter (docs/telehealth.md).

Layer: like `web`, above errors, config, fhir, store and auth; `api.app` mounts its routes.
"""
