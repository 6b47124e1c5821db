"""Placeholder: being written."""
NAME = "local"
