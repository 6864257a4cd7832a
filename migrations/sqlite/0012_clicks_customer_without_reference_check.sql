-- PostgreSQL drops the foreign key of `clicks.customer_id` here (its check ran as a trigger for
-- every inserted click, NULL or not). SQLite skips the check of a NULL key inline, and keeps it,
-- as it keeps 0009's; the schema parity test compares columns and indexes, not constraints.
SELECT 1;
