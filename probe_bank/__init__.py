"""Probe bank: activation capture, recency probes, scalar baselines, calibration, persistence,
report.

This package imports neither `trainer` nor `audit_service`.
"""
