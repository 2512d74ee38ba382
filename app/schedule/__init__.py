"""The pure time core: cron expressions, next runs in a zone with the DST rules, their
descriptions, and which occurrences are due, run or missed.
"""
