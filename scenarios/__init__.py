"""Scenario YAML files users run and copy (shipped as package data)."""
