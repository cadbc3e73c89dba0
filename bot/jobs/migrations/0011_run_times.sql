-- Provider run times learnt per tier (issue 18, item 8): each finished task's seconds queued and running at the
-- provider, by (model, resolution, duration; 0 when the job named none). The poll planner starts from these after
-- a restart instead of from the priors (bot/run_times.py); the store keeps the latest 50 per tier. No member data.
CREATE TABLE run_times (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model       TEXT    NOT NULL,
    resolution  TEXT    NOT NULL,
    duration    INTEGER NOT NULL,
    queued_s    REAL    NOT NULL,
    running_s   REAL    NOT NULL,
    observed_at TEXT    NOT NULL
);
CREATE INDEX run_times_tier ON run_times(model, resolution, duration, id);
