"""Clinical risk prediction: tasks, features from FHIR via SQL on FHIR views, training,
evaluation, explanations and real-data baselines."""
