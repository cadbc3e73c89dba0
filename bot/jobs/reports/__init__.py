"""Spend reports (issue 19): spend per day by model against the budgets, jobs by outcome, as a PNG and a CSV."""
