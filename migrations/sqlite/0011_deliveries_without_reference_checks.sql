-- PostgreSQL drops the foreign keys of `messages`, `deliveries` and `delivery_attempts` here
-- (each cost a row lock per inserted row; see its 0011). SQLite checks a foreign key with an
-- index lookup and no lock, and dropping one means rebuilding tables others reference, so SQLite
-- keeps them, as in 0009.
SELECT 1;
