-- PostgreSQL drops the foreign keys of `clicks` to tenants, links, partners and campaigns here
-- (each cost a row lock per inserted click). SQLite checks a foreign key with an index lookup
-- and no lock, and dropping one means rebuilding the table that `attributions` references, so
-- SQLite keeps them; the schema parity test compares columns and indexes, not constraints.
SELECT 1;
