"""What Remedy publishes about cases: the case view, the portfolio and the lessons report."""
