"""Airflow plugin file: the MobileDet ops dashboard in the api-server (include/dashboard)."""
from include.dashboard.plugin import MobiledetDashboardPlugin  # noqa: F401
