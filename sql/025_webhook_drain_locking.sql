-- Webhook drain: concurrent runs meet on conversation_thread rows (a few hundred busy threads carry most
-- messages). 001's update_thread_timestamp() updated them in whatever order its join produced, so two
-- runs with overlapping threads could deadlock; and the drain had to lock every thread up front (its
-- upsert) to stay safe, which serialised the runs' message inserts. Here the trigger first locks its
-- threads in thread_id order (one order for every writer: no deadlock), then does exactly what 001's
-- version does. Only this stretch — statement end to commit — is serial between concurrent drains.
CREATE OR REPLACE FUNCTION update_thread_timestamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM conversation_thread t
    WHERE t.thread_id IN (SELECT DISTINCT n.thread_id FROM new_messages n)
    ORDER BY t.thread_id
    FOR NO KEY UPDATE;

    UPDATE conversation_thread t
    SET last_message_at = GREATEST(t.last_message_at, agg.last_at),
        last_inbound_at = GREATEST(t.last_inbound_at, agg.last_inbound_at),
        updated_at = now()
    FROM (SELECT thread_id, max(sent_at) AS last_at,
                 max(sent_at) FILTER (WHERE direction = 'inbound') AS last_inbound_at
          FROM new_messages GROUP BY thread_id) agg
    WHERE t.thread_id = agg.thread_id;

    INSERT INTO messaging_policy_window AS w (thread_id, window_type, opened_at, expires_at)
    SELECT n.thread_id, k.window_type, max(n.sent_at), max(n.sent_at) + k.length
    FROM new_messages n
    CROSS JOIN (VALUES ('standard', interval '24 hours'), ('human_agent', interval '7 days'))
         AS k (window_type, length)
    WHERE n.direction = 'inbound' AND NOT n.is_echo
      AND (k.window_type = 'standard' OR n.platform IN ('messenger', 'instagram'))
    GROUP BY n.thread_id, k.window_type, k.length
    ORDER BY n.thread_id, k.window_type
    ON CONFLICT (thread_id, window_type) DO UPDATE
        SET opened_at = GREATEST(w.opened_at, EXCLUDED.opened_at),
            expires_at = GREATEST(w.expires_at, EXCLUDED.expires_at),
            updated_at = now();
    RETURN NULL;
END $$;

