-- PostgreSQL twin of ../0005_content_rules.sql (BIGINT ids).
-- Server content rules (issue 13): banned words and phrases per guild; guild_id 0 holds the owners' default
-- list, which applies in every guild. `phrase_key` is the normalised form (bot.jobs.rules.phrase_key), so a
-- rule typed twice in another case or width is one rule; `phrase` is kept as typed, to name it in a refusal.
CREATE TABLE content_rules (
    guild_id   BIGINT  NOT NULL,
    phrase_key TEXT    NOT NULL,
    phrase     TEXT    NOT NULL,
    added_by   BIGINT  NOT NULL,
    added_at   TEXT    NOT NULL,
    PRIMARY KEY (guild_id, phrase_key)
);

-- Bumped on every change to a guild's list (or the default list): each process caches a guild's compiled
-- rules under these versions, so a change made through another process is seen at the next check.
CREATE TABLE content_rule_versions (
    guild_id BIGINT  PRIMARY KEY,
    version  BIGINT  NOT NULL
);

-- Prompts refused by a rule, per guild and month ("YYYY-MM" in the budget's time zone), for /kf2v-quota.
CREATE TABLE content_rule_refusals (
    guild_id BIGINT  NOT NULL,
    month    TEXT    NOT NULL,
    refusals BIGINT  NOT NULL,
    PRIMARY KEY (guild_id, month)
);
