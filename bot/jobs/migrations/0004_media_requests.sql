-- Issue 12 (wan2.7-i2v and the media family): a request's length, sound, driving audio and the clip it
-- continues; NULL duration/sound mean "the model's default" (every earlier job is a 5-second silent kf2v
-- video). `audio` and `first_clip` are media references like the frames (sha256 + extension).
ALTER TABLE jobs ADD COLUMN duration INTEGER;
ALTER TABLE jobs ADD COLUMN sound INTEGER;
ALTER TABLE jobs ADD COLUMN audio TEXT;
ALTER TABLE jobs ADD COLUMN first_clip TEXT;

-- The provider's temporary uploads (oss:// URLs, 48 h, bound to the main account and the model): reused
-- while valid, so a job resumed after a restart re-uploads only what expired. No signature is ever stored
-- (the URL carries none).
CREATE TABLE uploads (
    sha256      TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    uploaded_at TEXT    NOT NULL,
    PRIMARY KEY (sha256, account, model)
);
CREATE INDEX uploads_expires ON uploads(expires_at);
