"""The one service layer that the REST routes, the Celery stages and the agent tools all call, with
its schemas (`schemas/`, a family per resource) and its errors (`errors.py`)."""
