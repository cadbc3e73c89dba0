-- Jobs, their event history, the money ledger, guild policies and small key/value state.
CREATE TABLE jobs (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id             INTEGER NOT NULL,
    channel_id           INTEGER NOT NULL,
    user_id              INTEGER NOT NULL,
    locale               TEXT    NOT NULL DEFAULT 'en-US',
    model                TEXT    NOT NULL,
    resolution           TEXT    NOT NULL,
    prompt               TEXT    NOT NULL,
    negative_prompt      TEXT,
    seed                 INTEGER,
    prompt_extend        INTEGER NOT NULL DEFAULT 1,
    template             TEXT,
    first_frame          TEXT    NOT NULL,
    last_frame           TEXT,
    parent_job_id        INTEGER REFERENCES jobs(id),
    state                TEXT    NOT NULL,
    queue_seq            INTEGER NOT NULL,
    account              TEXT,
    task_id              TEXT UNIQUE,
    request_id           TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    delivery_attempts    INTEGER NOT NULL DEFAULT 0,
    error_code           TEXT,
    error_key            TEXT,
    error_detail         TEXT,
    cost_reserved        INTEGER NOT NULL,
    cost_settled         INTEGER NOT NULL DEFAULT 0,
    charge_state         TEXT    NOT NULL,
    period_day           TEXT    NOT NULL,
    period_month         TEXT    NOT NULL,
    actual_prompt        TEXT,
    video_path           TEXT,
    video_url_expires_at TEXT,
    status_message_id    INTEGER,
    thread_id            INTEGER,
    cancel_requested     INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT    NOT NULL,
    submitted_at         TEXT,
    started_at           TEXT,
    finished_at          TEXT,
    delivered_at         TEXT,
    updated_at           TEXT    NOT NULL,
    CHECK (cost_reserved >= 0 AND cost_settled >= 0)
);
CREATE INDEX jobs_state ON jobs(state, queue_seq);
CREATE INDEX jobs_guild_day ON jobs(guild_id, period_day);
CREATE INDEX jobs_guild_month ON jobs(guild_id, period_month);
CREATE INDEX jobs_user ON jobs(guild_id, user_id, state);

CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL REFERENCES jobs(id),
    state    TEXT    NOT NULL,
    at       TEXT    NOT NULL,
    detail   TEXT
);
CREATE INDEX job_events_job ON job_events(job_id);

CREATE TABLE ledger (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL REFERENCES jobs(id),
    guild_id INTEGER NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('reserve', 'settle', 'release')),
    amount   INTEGER NOT NULL CHECK (amount >= 0),
    at       TEXT    NOT NULL,
    UNIQUE (job_id, kind)
);
CREATE INDEX ledger_guild ON ledger(guild_id);

CREATE TABLE guild_policies (
    guild_id            INTEGER PRIMARY KEY,
    daily_budget        INTEGER,
    monthly_budget      INTEGER,
    member_daily_videos INTEGER,
    user_queue_limit    INTEGER,
    allowed_channels    TEXT NOT NULL DEFAULT '[]',
    paused              INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
