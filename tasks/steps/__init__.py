"""The six IOM steps, one module each: their decisions as specs and their rules on stored cases.

See docs/architecture.md for where a new decision or step goes.
"""
