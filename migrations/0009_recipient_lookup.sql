-- The list's recipient filter ("what happened to the message for +31…") from an insert-only side table instead of
-- an index on tidings.messages.
--
-- Why: every index on tidings.messages costs an insertion on every status change (the claim and the completion
-- change indexed columns, so no update is HOT). 0008's messages_recipient covered every message with a phone, so
-- each transition of every SMS paid for it: the drain of `tidings bench --messages 100000` fell by about a fifth
-- (alternating runs, same machine). A recipient never changes, so its lookup row is written once, when the message
-- is inserted, and removed when the message is deleted; status changes never touch it.
--
-- Rows are added and removed by statement-level triggers over transition tables: one INSERT … SELECT per
-- enqueue_many call (or per prune batch), whatever path inserted the messages (tidings.enqueue, enqueue_many, the
-- HTTP API), so no enqueue function changes.
CREATE TABLE tidings.message_recipients (
    -- The recipient's phone number, cut to 64 characters as 0008's index was (a btree row has a size limit);
    -- readers re-check the full number on the message. Collation "C": only equality is ever asked, and comparing
    -- under the database's linguistic collation made each insertion cost about 5 us per message of a 1000-message
    -- enqueue_many (30% of the call); bytewise it is within noise of no lookup at all.
    phone      text COLLATE "C" NOT NULL,
    message_id uuid NOT NULL,
    PRIMARY KEY (phone, message_id)
);

-- SECURITY DEFINER: whichever role inserts or deletes messages (a producer through enqueue, the worker's pruner)
-- keeps the lookup in step without a grant on it; the functions do nothing but that.
CREATE FUNCTION tidings.message_recipients_add() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO tidings.message_recipients (phone, message_id)
    SELECT left(n.recipient ->> 'phone', 64), n.id
      FROM added n
     WHERE n.recipient ? 'phone' AND jsonb_typeof(n.recipient -> 'phone') = 'string';
    RETURN NULL;
END $$;

CREATE FUNCTION tidings.message_recipients_remove() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tidings.message_recipients r
     USING removed o
     WHERE o.recipient ? 'phone'
       AND r.phone = left(o.recipient ->> 'phone', 64)
       AND r.message_id = o.id;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_recipients_add AFTER INSERT ON tidings.messages
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION tidings.message_recipients_add();
CREATE TRIGGER messages_recipients_remove AFTER DELETE ON tidings.messages
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION tidings.message_recipients_remove();

-- The messages already there.
INSERT INTO tidings.message_recipients (phone, message_id)
SELECT left(recipient ->> 'phone', 64), id
  FROM tidings.messages
 WHERE recipient ? 'phone' AND jsonb_typeof(recipient -> 'phone') = 'string';

DROP INDEX tidings.messages_recipient;
