"""Probe bank: activation capture, recency probes, controls, calibration, persistence, report.

This package imports neither `trainer` nor `audit_service`.
"""
