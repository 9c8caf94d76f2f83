"""The demo (`python -m demo`) and its drivers: scripted stakeholders, mail and chat catchers.

Used by the demo, the benchmarks and the tests; not shipped with Remedy.
"""
