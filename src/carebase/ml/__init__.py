"""Clinical risk prediction: tasks, features, training, evaluation, explanation, registry, model cards and serving."""
