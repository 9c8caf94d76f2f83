"""The monitoring sweep over open cases, the doctor that compares the store with Prefect, and the
reconciler that repairs what the doctor finds.
"""
