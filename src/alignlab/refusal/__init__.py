"""Refusal direction: extract, select, ablate, add, bake into weights, export, evaluate, report.

Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single Direction" (arXiv 2406.11717).
"""
