-- Payouts (DESIGN.md section 11): partners' Stripe Connect accounts, payout runs, payouts, and
-- the clawbacks later payouts absorb. Same tables and columns as the other engine's twin.

-- Per tenant: how payouts are made (`stripe_connect` transfers, or `manual`: exported and
-- marked paid), the smallest payout (minor units, per currency), whether refunds of paid
-- commissions are clawed back, and where Stripe's onboarding returns the partner to.
CREATE TABLE payout_settings (
    tenant_id              TEXT PRIMARY KEY REFERENCES tenants (id),
    method                 TEXT NOT NULL CHECK (method IN ('stripe_connect', 'manual')),
    payout_minimum         INTEGER NOT NULL CHECK (payout_minimum >= 0),
    clawback_paid_refunds  INTEGER NOT NULL CHECK (clawback_paid_refunds IN (0, 1)),
    onboarding_return_url  TEXT,
    updated_at             INTEGER NOT NULL
);

-- A partner's Express connected account and its readiness, from Stripe's Account object
-- (`account.updated`, and re-read before each transfer). `currently_due` is a JSON array.
CREATE TABLE payout_accounts (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    partner_id         TEXT NOT NULL REFERENCES partners (id),
    stripe_account_id  TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('onboarding', 'ready', 'restricted')),
    currently_due      TEXT NOT NULL,
    disabled_reason    TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, partner_id),
    CONSTRAINT payout_accounts_stripe_key UNIQUE (tenant_id, stripe_account_id)
);

-- One run: scheduled (one per window across nodes) or on demand. `carried` is a JSON array of
-- the balances it did not pay, and why.
CREATE TABLE payout_runs (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    triggered_by  TEXT NOT NULL CHECK (triggered_by IN ('schedule', 'manual')),
    payout_count  INTEGER NOT NULL,
    carried       TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX payout_runs_newest ON payout_runs (tenant_id, created_at DESC, id DESC);

-- One payout per partner and currency in a run: `amount` = the commissions bound to it minus
-- the clawbacks it absorbed; never negative, never zero.
CREATE TABLE payouts (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    run_id              TEXT NOT NULL REFERENCES payout_runs (id),
    partner_id          TEXT NOT NULL REFERENCES partners (id),
    currency            TEXT NOT NULL,
    amount              INTEGER NOT NULL CHECK (amount > 0),
    commissions_amount  INTEGER NOT NULL,
    clawed_back         INTEGER NOT NULL,
    commission_count    INTEGER NOT NULL,
    method              TEXT NOT NULL CHECK (method IN ('stripe_connect', 'manual')),
    status              TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'reversed')),
    destination         TEXT,
    transfer_id         TEXT,
    reference           TEXT,
    failure_code        TEXT,
    failure_message     TEXT,
    -- When the transfer was first asked of Stripe: from then on the payout is never failed by
    -- a check of its own, only by Stripe's definite refusal (ADR 12).
    transfer_requested_at  INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    paid_at             INTEGER
);
CREATE INDEX payouts_newest ON payouts (tenant_id, created_at DESC, id DESC);
CREATE INDEX payouts_partner ON payouts (tenant_id, partner_id, created_at DESC, id DESC);
CREATE INDEX payouts_run ON payouts (tenant_id, run_id);
CREATE INDEX payouts_transfer ON payouts (tenant_id, transfer_id);

-- The payout a commission is bound to: one column, so a commission belongs to at most one
-- payout by construction. Set by the run that creates the payout, cleared when it fails or is
-- reversed (the commission is approved and free again).
ALTER TABLE commissions ADD COLUMN payout_id TEXT REFERENCES payouts (id);
CREATE INDEX commissions_payable ON commissions (tenant_id, partner_id, currency)
    WHERE status = 'approved' AND payout_id IS NULL;
CREATE INDEX commissions_payout ON commissions (tenant_id, payout_id)
    WHERE payout_id IS NOT NULL;

-- A clawback: a refund of a paid commission (with `clawback_paid_refunds` on) takes `amount`
-- (negative) from the partner's next payouts; a positive amount gives back what a clawback took
-- when its commission turned out unpaid after all. `payout_id` is the payout that absorbed it.
CREATE TABLE payout_adjustments (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    commission_id  TEXT NOT NULL REFERENCES commissions (id),
    currency       TEXT NOT NULL,
    amount         INTEGER NOT NULL CHECK (amount <> 0),
    payout_id      TEXT REFERENCES payouts (id),
    created_at     INTEGER NOT NULL
);
CREATE INDEX payout_adjustments_partner ON payout_adjustments (tenant_id, partner_id, currency);
CREATE INDEX payout_adjustments_commission ON payout_adjustments (tenant_id, commission_id);
