"""Alerts: rules and states (pure), raising them, delivering them, and the watchdog."""
