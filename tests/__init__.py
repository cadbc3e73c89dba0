"""The test suite: unit tests per module, end to end through both emulators, reliability campaigns.

`conftest.py` and `support/` hold what tests share (`support/world.py` builds a world of emulators and the real
bot); the folders mirror the code: unit/<package>, e2e, reliability, sandbox, project.
"""
