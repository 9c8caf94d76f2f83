"""The decision engine: requests, one-time codes, submissions and resuming a waiting run.

It reads what each decision means from the steps' table (tasks/steps/table.py).
"""
