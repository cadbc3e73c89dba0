-- The provider's task list covers the whole main account (other keys, the console, other apps): a listed task
-- can be ours only if it carries the api_key_id our own tasks carry. Learned from list rows of tasks the bot
-- created, one per account (accounts are named by a fingerprint of their key).
CREATE TABLE provider_keys (
    account    TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    learned_at TEXT NOT NULL
);

-- Every task id any job has had, including the earlier task of a job resubmitted after a temporary provider
-- failure: reconciliation never adopts one of these for another job, and the row count per job is how many
-- provider tasks the job has used.
CREATE TABLE job_tasks (
    task_id TEXT PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES jobs(id),
    at      TEXT    NOT NULL
);
CREATE INDEX job_tasks_job ON job_tasks(job_id);
INSERT INTO job_tasks (task_id, job_id, at)
    SELECT task_id, id, COALESCE(submitted_at, created_at) FROM jobs WHERE task_id IS NOT NULL;
