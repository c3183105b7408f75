"""Pure FHIR layer: definitions, validation, search parameters, FHIRPath, bundles, patch."""
