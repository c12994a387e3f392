"""Comparing networks under one budget: the same splits, plan, data and iterations for every network."""
