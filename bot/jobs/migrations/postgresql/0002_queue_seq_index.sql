-- New jobs take MAX(queue_seq) + 1 inside the admission transaction: without this index that is a scan of
-- every job ever made (about 1 ms per 10,000 rows, growing forever, while the write lock is held).
CREATE INDEX IF NOT EXISTS jobs_queue_seq ON jobs(queue_seq);
