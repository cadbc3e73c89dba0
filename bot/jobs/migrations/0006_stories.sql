-- Stories (issue 13): three to six keyframes joined into one video, made of N-1 ordinary segment jobs.
-- A story's money lives on its segment jobs (each reserves its share in the story's admission transaction,
-- settles on success, releases on failure), so the ledger needs nothing new; `cost_reserved` is the total
-- shown to the user at admission.
CREATE TABLE stories (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id           INTEGER NOT NULL,
    channel_id         INTEGER NOT NULL,
    user_id            INTEGER NOT NULL,
    locale             TEXT    NOT NULL DEFAULT 'en-US',
    thread_id          INTEGER,
    status_message_id  INTEGER,
    model              TEXT    NOT NULL,
    resolution         TEXT    NOT NULL,
    seed               INTEGER,
    -- JSON arrays: one prompt per segment; the normalised keyframes' media names, in order.
    prompts            TEXT    NOT NULL,
    frames             TEXT    NOT NULL,
    segments           INTEGER NOT NULL,
    state              TEXT    NOT NULL,
    cost_reserved      INTEGER NOT NULL,
    partial_opt_in     INTEGER NOT NULL DEFAULT 0,
    -- Join/post markers, restart-safe like a job's redelivery check: `generation` grows by one each time the
    -- segments change (a redone segment); a join is done for `joined_generation` and posted for
    -- `posted_generation`, each claimed by a guarded UPDATE so it happens once per generation.
    generation         INTEGER NOT NULL DEFAULT 1,
    joined_generation  INTEGER NOT NULL DEFAULT 0,
    posted_generation  INTEGER NOT NULL DEFAULT 0,
    joined_path        TEXT,
    joined_message_id  INTEGER,
    error_key          TEXT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    finished_at        TEXT,
    CHECK (segments BETWEEN 2 AND 5 AND cost_reserved >= 0)
);
CREATE INDEX stories_state ON stories(state);

-- A segment job: its story and 0-based place in it (segment k runs frame k -> frame k+1). A retried or redone
-- segment is a new job with the same pair; the segment's current job is the newest one.
ALTER TABLE jobs ADD COLUMN story_id INTEGER REFERENCES stories(id);
ALTER TABLE jobs ADD COLUMN segment_index INTEGER;
CREATE INDEX jobs_story ON jobs(story_id, segment_index);
