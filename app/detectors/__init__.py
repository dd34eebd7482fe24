"""Drift, anomaly and data-quality detectors: pure logic, no Faust."""
