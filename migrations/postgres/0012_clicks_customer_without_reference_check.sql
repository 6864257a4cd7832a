-- PostgreSQL queues the foreign-key check of `clicks.customer_id` as an after-row trigger for
-- every inserted click, and runs it at the end of the statement (fetching the row again), also
-- when the column is NULL, which it is for every new click. In a profile of the click router it
-- was 8% of PostgreSQL's time; `EXPLAIN ANALYZE` of 100,000 inserted rows shows the trigger
-- called 100,000 times for nothing. A click gets its customer later, from
-- `POST /v1/identities`, which ties it to a customer the same transaction has just found or
-- inserted (an existing customer is checked first), and customers are never deleted, so the
-- check could not fail. 0009 kept it; this drops it, for the same reason as 0009's four.

ALTER TABLE clicks DROP CONSTRAINT clicks_customer_id_fkey;
