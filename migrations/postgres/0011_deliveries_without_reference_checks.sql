-- Every message, delivery and attempt checked its foreign keys with a lookup and a row lock
-- (FOR KEY SHARE) on the referenced rows. Every one of them locks its tenant's row, and a
-- delivery or attempt its endpoint's, which the same burst of deliveries updates for their
-- counters: concurrent lockers of one row share it through a multixact, written on each new
-- locker. The values come from rows the writing transaction has just read (the message and the
-- subscribed endpoints at fan-out, the delivery at an attempt), and tenants, messages,
-- deliveries and endpoints are never deleted (an endpoint's deletion sets `deleted_at`), so
-- the checks could not fail. Same reasoning as 0009 for clicks.

ALTER TABLE messages
    DROP CONSTRAINT messages_tenant_id_fkey;

ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_tenant_id_fkey,
    DROP CONSTRAINT deliveries_message_id_fkey,
    DROP CONSTRAINT deliveries_endpoint_id_fkey;

ALTER TABLE delivery_attempts
    DROP CONSTRAINT delivery_attempts_tenant_id_fkey,
    DROP CONSTRAINT delivery_attempts_delivery_id_fkey,
    DROP CONSTRAINT delivery_attempts_endpoint_id_fkey;
