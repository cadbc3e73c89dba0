-- PostgreSQL twin of ../0009_account_names.sql.
CREATE TABLE account_keys (
    account     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    bound_at    TEXT NOT NULL
);
