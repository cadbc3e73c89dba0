"""The domain: jobs from request to delivered video, with no Discord in it.

The service (`service.py`, the one entry point the Discord layer calls), the models, the ports it needs
(`ports.py`), the scheduler, budgets (`quota.py`), frames and media, the store (`store/`, all SQL, one module per
aggregate) over `db/`, and the worker (`worker/`) that moves jobs through the provider.
"""
