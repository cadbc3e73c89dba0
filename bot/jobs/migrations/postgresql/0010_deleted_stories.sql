-- Delete on a story's video (issue 19), as 0008 for a job's: who took it down and when. The story's segment
-- jobs and their ledger entries stay (what was spent stays spent); the posted messages and the files go.
ALTER TABLE stories ADD COLUMN deleted_by BIGINT;
ALTER TABLE stories ADD COLUMN deleted_at TEXT;
