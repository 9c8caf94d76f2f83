"""The approval page: a Starlette app (app.py) and its templates."""
