"""Textbridge: a family's phone texts in Matrix, from a Raspberry Pi."""

__version__ = "0.1.0"
