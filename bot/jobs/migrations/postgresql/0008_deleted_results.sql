-- Delete (issue 19): who took a delivered video down, and when. The job row and its ledger entries stay (money
-- already spent stays spent and counts in the budgets); only the posted messages and the video file go.
ALTER TABLE jobs ADD COLUMN deleted_by BIGINT;
ALTER TABLE jobs ADD COLUMN deleted_at TEXT;
