-- Accounts are named by their place in the configuration ("primary" for DASHSCOPE_API_KEY, "extra-1", "extra-2"
-- ... for DASHSCOPE_EXTRA_API_KEYS), no longer by a fingerprint of the key: a rotated key keeps its account, so
-- jobs in flight carry on with the new key instead of failing "account gone" while the provider bills them.
-- The key's fingerprint (never the key) is kept to notice a rotation, and to rename once, at the first start
-- with this version, the rows written under the old fingerprint names (the key is not in the database, so
-- the renaming is done by the bot, which knows it).
CREATE TABLE account_keys (
    account     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    bound_at    TEXT NOT NULL
);
