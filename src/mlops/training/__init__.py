"""Training: hyperparameter search jobs with Optuna over a catalogue of scikit-learn estimators,
tracked and registered in MLflow. A job runs as a run of the system pipeline ``_training``
(``service.py``); its phases run in step processes (``runner.py``, through the step types in
``mlops.steps.library.training``)."""
