-- PostgreSQL twin of ../0003_provider_tasks.sql (BIGINT ids).
CREATE TABLE provider_keys (
    account    TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    learned_at TEXT NOT NULL
);

CREATE TABLE job_tasks (
    task_id TEXT PRIMARY KEY,
    job_id  BIGINT NOT NULL REFERENCES jobs(id),
    at      TEXT    NOT NULL
);
CREATE INDEX job_tasks_job ON job_tasks(job_id);
INSERT INTO job_tasks (task_id, job_id, at)
    SELECT task_id, id, COALESCE(submitted_at, created_at) FROM jobs WHERE task_id IS NOT NULL;
