-- PostgreSQL twin of ../0007_privacy.sql (BIGINT flags, as the other twins).
-- Privacy (issue 19): KF2V_RETENTION_DAYS and /kf2v-forget-me. A job or story is anonymised by blanking its
-- prompts and setting its user id to 0 (never a Discord id); `anonymised_at` says when, so the retention sweep
-- does each row once. Its money (cost_settled, charge_state, the ledger's rows, which never held a user id)
-- stays for the budgets and reports. `erase_requested` marks a forgotten member's jobs and stories that were
-- still in flight: they finish first (delivery needs who asked), then the sweeper erases them.
ALTER TABLE jobs ADD COLUMN anonymised_at TEXT;
ALTER TABLE jobs ADD COLUMN erase_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stories ADD COLUMN anonymised_at TEXT;
ALTER TABLE stories ADD COLUMN erase_requested BIGINT NOT NULL DEFAULT 0;
-- Forget-me looks a member up across every guild; the retention sweep reads only rows not yet anonymised.
CREATE INDEX jobs_user_any ON jobs(user_id);
CREATE INDEX stories_user ON stories(user_id);
CREATE INDEX jobs_not_anonymised ON jobs(finished_at) WHERE anonymised_at IS NULL;
CREATE INDEX jobs_erase_requested ON jobs(erase_requested) WHERE erase_requested = 1;
