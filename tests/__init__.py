"""The test suite: unit tests per module, end to end through both emulators, reliability campaigns.

`conftest.py` and `support/` hold what tests share; `e2e.py` builds a world of emulators and the real bot.
"""
