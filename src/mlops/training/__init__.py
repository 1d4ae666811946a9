"""Training: hyperparameter search with Optuna over a catalogue of scikit-learn estimators.

Not yet listed in ``mlops.domains``: the job API, MLflow tracking and the registry come next
(issue 4); this package holds the pure search logic they will use.
"""
