"""Shipped config files, installed as the package rnnjax.configs (see pyproject.toml)."""
