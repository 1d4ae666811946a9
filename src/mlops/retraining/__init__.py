"""Automated retraining: triggers, champion against challenger, promotion (being built)."""
