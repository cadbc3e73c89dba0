"""Unit tests of bot.jobs: store, scheduler, worker, admission, uploads, databases, stories."""
