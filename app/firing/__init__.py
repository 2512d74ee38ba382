"""Firing: the dispatcher's tick (claim, record, advance, publish, sweep) and one run's
attempt (claim, deliver, record), with its retry timing.
"""
