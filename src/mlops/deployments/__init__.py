"""Deployments: serving model versions, A/B experiments and canary rollouts."""
