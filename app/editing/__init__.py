"""Editing: triggers (create, update, delete, the one save path), sync, run now, cancel,
history reads, API keys.
"""
