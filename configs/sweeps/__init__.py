"""Shipped sweep config files, installed as rnnjax.configs.sweeps."""
