"""The FastAPI prediction service that follows the registry."""
