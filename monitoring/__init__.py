"""Drift on logged traffic: features, detection, policy, alerts."""
