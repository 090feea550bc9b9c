"""Runners execute the planned work units: on this machine (local) or on a Ray cluster (ray)."""
