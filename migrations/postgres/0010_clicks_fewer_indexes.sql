-- Every click the router stores paid for three index entries. Two of them served nothing:
-- `clicks_link_created` was read by no query, and `clicks_customer` indexed every click under a
-- NULL customer although it is only ever searched by a customer id (attribution by customer).
-- The customer index now holds only the clicks tied to a customer, which a click gets later,
-- one at a time, from `POST /v1/identities`; a new click costs its primary key entry alone.
DROP INDEX clicks_link_created;
DROP INDEX clicks_customer;
CREATE INDEX clicks_customer ON clicks (tenant_id, customer_id, created_at)
    WHERE customer_id IS NOT NULL;
