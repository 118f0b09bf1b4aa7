"""The triage web application (``ich serve``): FastAPI app, SQLite store, background worker,
single-page viewer and JSON API. Start with :func:`ich.web.app.create_app`."""
