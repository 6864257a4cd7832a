//! SQL for the `links` and `clicks` tables.

use crate::db::{is_unique_violation, Db, Dialect, Tx, LINK_KEY_SETTING, TENANT_SETTING};
use crate::http::pagination::Page;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredLink {
    pub id: String,
    pub tenant_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub link_key: String,
    pub created_at: i64,
}

/// Returns false when the key is taken (keys are unique across tenants).
pub async fn insert(tx: &mut Tx, link: &StoredLink) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO links (id, tenant_id, partner_id, campaign_id, link_key, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&link.id)
    .bind(&link.tenant_id)
    .bind(&link.partner_id)
    .bind(&link.campaign_id)
    .bind(&link.link_key)
    .bind(link.created_at)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e, "links_key_key", "links.link_key") => Ok(false),
        Err(e) => Err(e),
    }
}

/// One page of a partner's links, newest first.
pub async fn list(
    tx: &mut Tx,
    tenant_id: &str,
    partner_id: &str,
    page: &Page,
) -> sqlx::Result<Vec<StoredLink>> {
    sqlx::query_as(
        "SELECT id, tenant_id, partner_id, campaign_id, link_key, created_at FROM links
         WHERE tenant_id = $1 AND partner_id = $2
           AND (created_at < $3 OR (created_at = $3 AND id < $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5",
    )
    .bind(tenant_id)
    .bind(partner_id)
    .bind(page.after.0)
    .bind(&page.after.1)
    .bind(page.fetch())
    .fetch_all(&mut **tx)
    .await
}

/// What the click router needs to know about a link.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LinkRow {
    pub tenant_id: String,
    pub link_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub destination_url: String,
    pub allowed_domains: String,
    pub click_param: String,
}

/// The link with this key, from any tenant: the lookup sees that one link (RLS on PostgreSQL),
/// learns its tenant, and reads its campaign as that tenant.
pub async fn find_by_key(db: &Db, key: &str) -> sqlx::Result<Option<LinkRow>> {
    let mut tx = db.pool().begin().await?;
    db.set_local(&mut tx, LINK_KEY_SETTING, key).await?;
    let tenant: Option<(String,)> =
        sqlx::query_as("SELECT tenant_id FROM links WHERE link_key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((tenant,)) = tenant else {
        return Ok(None);
    };
    db.set_local(&mut tx, TENANT_SETTING, &tenant).await?;
    let row = sqlx::query_as(
        "SELECT l.tenant_id, l.id AS link_id, l.partner_id, l.campaign_id, c.destination_url,
                c.allowed_domains, c.click_param
         FROM links l JOIN campaigns c ON c.id = l.campaign_id AND c.tenant_id = l.tenant_id
         WHERE l.tenant_id = $1 AND l.link_key = $2",
    )
    .bind(&tenant)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// A click, as recorded: the link's ids come from the router's (shared) view of the link.
#[derive(Clone, Debug)]
pub struct Click {
    pub id: String,
    pub target: std::sync::Arc<super::Target>,
    pub ip_hash: String,
    pub user_agent: String,
    pub referer: String,
    pub created_at: i64,
}

/// PostgreSQL's batch insert: `$1`..`$9` one array per column, `$10` the batch's partners. The
/// arrays are unnested side by side in the select list, which streams their rows; `unnest` in
/// `FROM` would first copy them all into a tuplestore.
const POSTGRES_INSERT: &str = "
    INSERT INTO clicks (id, tenant_id, link_id, partner_id, campaign_id, revoked, ip_hash,
                        user_agent, referer, created_at)
    SELECT v.id, v.tenant_id, v.link_id, v.partner_id, v.campaign_id,
           CASE WHEN v.partner_id = ANY (ARRAY(SELECT p.id FROM partners p
                                      WHERE p.id = ANY($10::text[]) AND p.status = 'revoked'))
                THEN 1 ELSE 0 END,
           v.ip_hash, v.user_agent, v.referer, v.created_at
    FROM (SELECT unnest($1::text[]) AS id, unnest($2::text[]) AS tenant_id,
                 unnest($3::text[]) AS link_id, unnest($4::text[]) AS partner_id,
                 unnest($5::text[]) AS campaign_id, unnest($6::text[]) AS ip_hash,
                 unnest($7::text[]) AS user_agent, unnest($8::text[]) AS referer,
                 unnest($9::bigint[]) AS created_at) AS v";

/// The most clicks SQLite's insert binds at once (nine parameters each).
const SQLITE_CHUNK: usize = 128;

/// SQLite's insert of `rows` clicks, for each power of two up to [`SQLITE_CHUNK`]: a `VALUES`
/// list of anonymous parameters, nine per click in the order of `v`'s columns.
static SQLITE_INSERTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..=SQLITE_CHUNK.ilog2())
        .map(|power| {
            format!(
                "WITH v(id, tenant_id, link_id, partner_id, campaign_id, ip_hash, user_agent,
                        referer, created_at) AS (VALUES {})
                 INSERT INTO clicks (id, tenant_id, link_id, partner_id, campaign_id, revoked,
                                     ip_hash, user_agent, referer, created_at)
                 SELECT v.id, v.tenant_id, v.link_id, v.partner_id, v.campaign_id,
                        CASE WHEN p.status = 'revoked' THEN 1 ELSE 0 END,
                        v.ip_hash, v.user_agent, v.referer, v.created_at
                 FROM v LEFT JOIN partners p ON p.id = v.partner_id",
                Dialect::Sqlite.values(1 << power, 9)
            )
        })
        .collect()
});

/// Writes `clicks` (of any tenants) in one transaction, one insert per tenant. A click is
/// flagged `revoked` when its partner is revoked as of this commit (not as of a cached read).
///
/// PostgreSQL reads the rows from one array parameter per column (`unnest`), which it parses
/// in about half the time of the same rows as JSON objects, and looks up the batch's partners
/// once (a join would hash every row of the batch, or scan every partner). SQLite binds each
/// value, in chunks of a power of two clicks (so a connection prepares at most eight
/// statements), and looks up each row's partner by key.
pub async fn insert_clicks(db: &Db, clicks: &[Click]) -> sqlx::Result<()> {
    let groups = crate::db::by_tenant(clicks, |c| &c.target.tenant_id);
    let Some((first, _)) = groups.first() else {
        return Ok(());
    };
    let mut tx = db.write_unflushed(first).await?;
    for (n, (tenant, batch)) in groups.iter().enumerate() {
        if n > 0 {
            db.set_local(&mut tx, TENANT_SETTING, tenant).await?;
        }
        match db.dialect() {
            Dialect::Postgres => {
                let column = |value: fn(&Click) -> &str| {
                    Dialect::array_literal(batch.iter().map(|c| value(c)))
                };
                let mut partners: Vec<&str> =
                    batch.iter().map(|c| c.target.partner_id.as_str()).collect();
                partners.sort_unstable();
                partners.dedup();
                sqlx::query(POSTGRES_INSERT)
                    .bind(column(|c| &c.id))
                    .bind(column(|c| &c.target.tenant_id))
                    .bind(column(|c| &c.target.link_id))
                    .bind(column(|c| &c.target.partner_id))
                    .bind(column(|c| &c.target.campaign_id))
                    .bind(column(|c| &c.ip_hash))
                    .bind(column(|c| &c.user_agent))
                    .bind(column(|c| &c.referer))
                    .bind(Dialect::array_literal(
                        batch.iter().map(|c| c.created_at.to_string()),
                    ))
                    .bind(Dialect::array_literal(partners))
                    .execute(&mut *tx)
                    .await?;
            }
            Dialect::Sqlite => {
                let mut rest = &batch[..];
                while !rest.is_empty() {
                    let power = rest.len().min(SQLITE_CHUNK).ilog2();
                    let (chunk, tail) = rest.split_at(1 << power);
                    let mut query = sqlx::query(&SQLITE_INSERTS[power as usize]);
                    for c in chunk {
                        let t = &c.target;
                        query = query
                            .bind(c.id.as_str())
                            .bind(t.tenant_id.as_str())
                            .bind(t.link_id.as_str())
                            .bind(t.partner_id.as_str())
                            .bind(t.campaign_id.as_str())
                            .bind(c.ip_hash.as_str())
                            .bind(c.user_agent.as_str())
                            .bind(c.referer.as_str())
                            .bind(c.created_at);
                    }
                    query.execute(&mut *tx).await?;
                    rest = tail;
                }
            }
        }
    }
    tx.commit().await
}
