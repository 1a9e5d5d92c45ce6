"""Theca host tools: the `theca` command."""
