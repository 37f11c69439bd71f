"""The controller's REST API (FastAPI)."""
