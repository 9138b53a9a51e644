"""Shim for tools that expect a setup.py; the package metadata lives in pyproject.toml."""
from setuptools import setup

setup()
