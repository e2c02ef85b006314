"""Prefect flows: thin orchestration over ``mll_registry`` (see prefect.yaml for deployments)."""
