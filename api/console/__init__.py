"""The operator console: server-rendered pages of the web process (/console)."""
