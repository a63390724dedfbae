"""Rendering the translated program as model.py source."""
