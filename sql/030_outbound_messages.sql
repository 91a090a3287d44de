-- Outbound queue mechanics on top of 001's outbound_message_job.
--   claimed_by   the run that holds a claim; a run only marks 'sending' and records results for rows it
--                still holds, so a claim that expired and was taken over is never sent twice.
--   window_rule  which policy window the send needs, re-checked just before sending
--                (standard = 24 h, human_agent = 7 days with MESSAGE_TAG/HUMAN_AGENT, none = WhatsApp template).
--   flagged_at   an 'unknown' outcome (crash or lost answer mid-send) that no echo/status webhook has
--                reconciled within the grace period: handed to an operator instead of re-sent blindly.

ALTER TABLE outbound_message_job
    ADD COLUMN IF NOT EXISTS claimed_by uuid,
    ADD COLUMN IF NOT EXISTS window_rule text NOT NULL DEFAULT 'standard'
        CHECK (window_rule IN ('standard', 'human_agent', 'none')),
    ADD COLUMN IF NOT EXISTS flagged_at timestamptz;

CREATE INDEX IF NOT EXISTS outbound_message_job_message_idx ON outbound_message_job (message_id);
CREATE INDEX IF NOT EXISTS outbound_message_job_unknown_idx ON outbound_message_job (created_at)
    WHERE status = 'unknown';
CREATE INDEX IF NOT EXISTS outbound_message_job_failed_idx ON outbound_message_job (updated_at)
    WHERE status = 'failed';

-- WhatsApp answers 200 ("accepted") and may reject later with a `failed` status webhook. When webhook
-- processing marks our outbound message failed, the job that sent it ends failed with the same reason.
CREATE OR REPLACE FUNCTION outbound_job_follow_message_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE outbound_message_job j
    SET status = 'failed', error_code = NEW.error_code,
        error_message = coalesce(NEW.error_message, 'failed after Meta accepted it'), updated_at = now()
    WHERE j.message_id = NEW.message_id AND j.status IN ('sent', 'unknown', 'sending');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS conversation_message_outbound_failed ON conversation_message;
CREATE TRIGGER conversation_message_outbound_failed
    AFTER UPDATE OF status ON conversation_message
    FOR EACH ROW
    WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed' AND NEW.direction = 'outbound')
    EXECUTE FUNCTION outbound_job_follow_message_failure();
