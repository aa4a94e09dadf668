"""The built-in /dashboard page: live stage mix, request rate, jobs and the bank's figures."""

from audit_service.dashboard.controller import DashboardController

__all__ = ["DashboardController"]
