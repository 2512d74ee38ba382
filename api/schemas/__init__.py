"""Marshmallow schemas of the HTTP API: input (``triggers``), output (``views``), the rest."""
