"""Probe drivers."""
