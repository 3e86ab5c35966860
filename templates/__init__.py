"""Chameleon page templates for the published index and project pages."""
