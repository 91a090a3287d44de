"""Sandbox surface: messaging (endpoints registered on `surface`; data built by its populator)."""

from everreach_data.sandbox.core import Surface

surface = Surface("messaging")
