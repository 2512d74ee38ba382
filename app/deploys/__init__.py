"""Deployments: the fence and roles, activation, the process registry and each process's
presence, and what status and health print.
"""
