-- Webhooks in: batches in flight, so that one whose run died is noticed.
--
-- A batch is one transaction, so a run killed mid-batch (SIGKILL, out of memory, a crash) leaves no trace in
-- the inbox: its events are simply pending again. That is right for a run killed by accident, but an event
-- that itself kills the run would be claimed, and kill the run, for ever, and every event in its batch with
-- it. So each batch is recorded here, committed on a second connection while the batch's transaction holds
-- an advisory lock on batch_key, and deleted by the batch's own commit. A row whose key nobody holds is a
-- batch whose run died: its events are counted an attempt and retried one at a time, so an event that kills
-- the drain fails by itself after a few attempts and the others go through.
CREATE TABLE IF NOT EXISTS webhook_drain_batch (
    batch_key   bigint PRIMARY KEY,   -- pg_advisory_xact_lock key, held by the batch's transaction
    event_ids   int8range[] NOT NULL, -- runs of consecutive ids: a few values, where a bigint[] was toasted
    started_at  timestamptz NOT NULL DEFAULT now()
);
