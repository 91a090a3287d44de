-- Messages out: the outbound queue the send endpoints write and send_outbound_messages drains.

-- The outbound queue: one row per send request, drained by the send_outbound_messages job.
CREATE TABLE outbound_message_job (
    job_id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id          uuid NOT NULL REFERENCES conversation_message (message_id) ON DELETE CASCADE,
    thread_id           uuid NOT NULL REFERENCES conversation_thread (thread_id) ON DELETE CASCADE,
    platform            text NOT NULL CHECK (platform IN ('messenger', 'instagram', 'whatsapp')),
    channel_id          text NOT NULL,     -- the sender: Page id / IG account id / phone_number_id
    recipient_id        text NOT NULL,
    request             jsonb NOT NULL,    -- the Graph API request body
    messaging_type      text,              -- RESPONSE | MESSAGE_TAG (Messenger/Instagram)
    tag                 text,              -- HUMAN_AGENT
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'cancelled')),
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 5,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    locked_until        timestamptz,
    platform_message_id text,
    error_code          integer,
    error_subcode       integer,
    error_message       text,
    fbtrace_id          text,
    requested_by        text,              -- JWT sub
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    claimed_by          uuid,              -- the run that holds a claim: only it marks sending and records
                                           -- results, so a claim that expired and was taken over is never sent twice
    window_rule         text NOT NULL DEFAULT 'standard'  -- the window the send needs, re-checked before sending:
                        CHECK (window_rule IN ('standard', 'human_agent', 'none')),  -- 24 h, 7 days, template
    flagged_at          timestamptz,       -- an 'unknown' outcome no echo/status webhook reconciled in time:
                                           -- handed to an operator instead of re-sent blindly
    CONSTRAINT outbound_message_job_idempotency_key UNIQUE (requested_by, idempotency_key)
);
CREATE INDEX outbound_message_job_due_idx ON outbound_message_job (next_attempt_at)
    WHERE status IN ('queued', 'sending');
CREATE INDEX outbound_message_job_message_idx ON outbound_message_job (message_id);
CREATE INDEX outbound_message_job_unknown_idx ON outbound_message_job (created_at)
    WHERE status = 'unknown';
CREATE INDEX outbound_message_job_failed_idx ON outbound_message_job (updated_at)
    WHERE status = 'failed';

-- WhatsApp answers 200 ("accepted") and may reject later with a `failed` status webhook. When webhook
-- processing marks our outbound message failed, the job that sent it ends failed with the same reason.
CREATE FUNCTION outbound_job_follow_message_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbound_message_job j
    SET status = 'failed', error_code = NEW.error_code,
        error_message = coalesce(NEW.error_message, 'failed after Meta accepted it'), updated_at = now()
    WHERE j.message_id = NEW.message_id AND j.status IN ('sent', 'unknown', 'sending');
    RETURN NULL;
END $$;

CREATE TRIGGER conversation_message_outbound_failed
    AFTER UPDATE OF status ON conversation_message
    FOR EACH ROW
    WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed' AND NEW.direction = 'outbound')
    EXECUTE FUNCTION outbound_job_follow_message_failure();

-- ───────────────────────────── monitoring (the runbook's query) ─────────────────────────────

CREATE VIEW outbound_status_rates_7d AS
SELECT status, count(*) AS count,
       round(count(*) * 100.0 / sum(count(*)) OVER (), 2) AS percentage
FROM conversation_message
WHERE direction = 'outbound' AND sent_at >= now() - interval '7 days'
GROUP BY status;
