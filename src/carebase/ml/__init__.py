"""Clinical risk prediction: tasks, features, training, evaluation, registry, serving."""
