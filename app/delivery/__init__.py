"""Delivering one occurrence: the signed webhook or the task message (``send``), the SSRF
guard, the HTTP transport and message templates.
"""
