"""Scoring: bits/dim, the judge, graded degradations, the sample score, model evaluation."""
