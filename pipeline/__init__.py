"""Orchestration and the `lifecycle` CLI: no ML logic lives here."""
