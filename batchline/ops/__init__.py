"""Checking a running fleet: the checks behind `batchline doctor`."""
