"""The web views, registered by app.py as faust Blueprints (so no view module imports the app).

``views``      the JSON API under /v1 (windows, alerts, rollups, status, health) and /metrics.
``params``     parsing and bounds of the API's query parameters.
``context``    what the views use of the app, as a Protocol.
``dashboard``  the dashboard page at / and its static files (``static/``).
"""
