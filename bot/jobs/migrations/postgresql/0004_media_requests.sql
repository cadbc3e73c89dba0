-- PostgreSQL twin of ../0004_media_requests.sql (BIGINT sizes).
ALTER TABLE jobs ADD COLUMN duration INTEGER;
ALTER TABLE jobs ADD COLUMN sound INTEGER;
ALTER TABLE jobs ADD COLUMN audio TEXT;
ALTER TABLE jobs ADD COLUMN first_clip TEXT;

CREATE TABLE uploads (
    sha256      TEXT   NOT NULL,
    account     TEXT   NOT NULL,
    model       TEXT   NOT NULL,
    url         TEXT   NOT NULL,
    expires_at  TEXT   NOT NULL,
    size        BIGINT NOT NULL,
    uploaded_at TEXT   NOT NULL,
    PRIMARY KEY (sha256, account, model)
);
CREATE INDEX uploads_expires ON uploads(expires_at);
