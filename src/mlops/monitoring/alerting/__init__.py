"""Alerting: rules on monitored figures (``figures.py``), their state machine (``state.py``),
evaluated by one process (``evaluator.py``), notifying channels (``mlops.monitoring.channels``),
managed over the API (``api.py``, ``service.py``)."""
