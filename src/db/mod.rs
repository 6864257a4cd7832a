//! Storage: one sqlx `Any` pool over SQLite (embedded default) or PostgreSQL (production).
//!
//! Slices never open bare transactions on tenant data: they ask for [`Db::read`] or
//! [`Db::write`] with the tenant id, which on PostgreSQL also sets the row-level-security
//! setting, so a query that forgets its `tenant_id` filter still sees only that tenant's rows.
//! Migrations live in `migrations/sqlite` and `migrations/postgres`: same versions, same tables,
//! same columns (a test compares the two schemas).

mod dialect;
mod group_commit;

pub use dialect::{Dialect, KEY_PREFIX_SETTING, LINK_KEY_SETTING, TENANT_SETTING};
pub use group_commit::GroupCommit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool};

/// The database file of a `sqlite:` URL; `None` for PostgreSQL and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Creates the SQLite file readable by its owner only (0600) before SQLite opens it: SQLite
/// gives its `-wal` and `-shm` files the database's mode, so all three stay private. A file
/// left by an older version with wider permissions is narrowed, with its companions.
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create database {}: {e}", path.display()),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            // A file this process may open but not chmod (another owner) stays as it is.
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {
                    tracing::warn!(file = %file.display(), "narrowed the database file's permissions to 0600")
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "the database file is readable by others and cannot be narrowed to 0600")
                }
            }
        }
    }
    Ok(())
}

/// A transaction on the shared pool.
pub type Tx = sqlx::Transaction<'static, Any>;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The connection pools and the engine they talk to.
///
/// Writes go through `writer`. On PostgreSQL it is the same pool as reads. On SQLite, which
/// allows one writer at a time, it holds a single connection: writers then queue in order for
/// it instead of colliding on the file lock, where SQLite's busy handler would make them sleep
/// in growing steps.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    writer: AnyPool,
    dialect: Dialect,
}

impl Db {
    /// Connects to `url` (`sqlite:PATH` creates the file when missing, `postgres://...`).
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        if let Some(path) = sqlite_file(url).filter(|_| !url.contains("mode=ro")) {
            create_private(&path)?;
        }
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let open = |max_connections: u32| {
            AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(move |conn, _meta| Box::pin(dialect.prepare_connection(conn)))
                .connect(&url)
        };
        let pool = open(max_connections)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))?;
        let writer = match dialect {
            Dialect::Sqlite => open(1)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))?,
            Dialect::Postgres => pool.clone(),
        };
        Ok(Self {
            pool,
            writer,
            dialect,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The pool for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for writes (the job queue writes through it too).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Applies every pending migration of this engine.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.writer)
            .await
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))
    }

    /// Lets the restricted application role `role` use the tables the owner just migrated
    /// (PostgreSQL only). Row-level security still applies to it: it is neither the owner
    /// nor allowed to bypass RLS.
    pub async fn grant_app_role(&self, role: &str) -> anyhow::Result<()> {
        if self.dialect != Dialect::Postgres {
            return Ok(());
        }
        let role = quote_ident(role);
        for statement in [
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
            ),
            format!("REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM {role}"),
        ] {
            sqlx::query(&statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// A read transaction scoped to `tenant_id`.
    pub async fn read(&self, tenant_id: &str) -> sqlx::Result<Tx> {
        self.begin_scoped(&self.pool, "BEGIN", tenant_id).await
    }

    /// A write transaction scoped to `tenant_id`.
    pub async fn write(&self, tenant_id: &str) -> sqlx::Result<Tx> {
        self.begin_scoped(&self.writer, self.dialect.begin_write(), tenant_id)
            .await
    }

    /// A write transaction whose commit does not wait for the database's disk flush
    /// (PostgreSQL; SQLite never waits for one). A database crash before the flush loses it, so
    /// it is only for writes that loss cannot hurt more than a crash of this process would:
    /// - a job handler's effects, when the job is marked done only after this commits (ADR 6):
    ///   the WAL then loses the effects and the done mark together, and the job runs again;
    /// - buffered clicks (ADR 7), already answered and already lost if this process dies first.
    ///
    /// Never for anything else a request accepts.
    pub async fn write_unflushed(&self, tenant_id: &str) -> sqlx::Result<Tx> {
        self.begin_scoped(&self.writer, self.dialect.begin_unflushed(), tenant_id)
            .await
    }

    /// Begins on `pool` with the tenant setting in place. On PostgreSQL an id made of plain
    /// characters (every id this service issues) rides in the BEGIN's own round trip as a
    /// literal; anything else is bound as a parameter in a second statement.
    async fn begin_scoped(
        &self,
        pool: &AnyPool,
        begin: &'static str,
        tenant_id: &str,
    ) -> sqlx::Result<Tx> {
        let plain = !tenant_id.is_empty()
            && tenant_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if self.dialect == Dialect::Postgres && plain {
            return pool
                .begin_with(format!(
                    "{begin}; SELECT set_config('{TENANT_SETTING}', '{tenant_id}', true)"
                ))
                .await;
        }
        let mut tx = pool.begin_with(begin).await?;
        self.set_local(&mut tx, TENANT_SETTING, tenant_id).await?;
        Ok(tx)
    }

    /// A write transaction on tables that belong to no tenant (the tenant registry).
    pub async fn write_global(&self) -> sqlx::Result<Tx> {
        self.writer.begin_with(self.dialect.begin_write()).await
    }

    /// Sets a per-transaction RLS setting (a no-op on SQLite).
    pub async fn set_local(&self, tx: &mut Tx, name: &str, value: &str) -> sqlx::Result<()> {
        if let Some(sql) = self.dialect.set_local() {
            sqlx::query(sql)
                .bind(name)
                .bind(value)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// Rows of a group commit split by tenant, for one transaction that sets the tenant before each
/// group's statements.
pub fn by_tenant<'a, T>(rows: &'a [T], tenant: impl Fn(&T) -> &str) -> Vec<(&'a str, Vec<&'a T>)> {
    let mut groups: Vec<(&'a str, Vec<&'a T>)> = Vec::new();
    for row in rows {
        let id = tenant(row);
        match groups.iter_mut().find(|(t, _)| *t == id) {
            Some((_, group)) => group.push(row),
            None => groups.push((id, vec![row])),
        }
    }
    groups
}

/// Quotes a PostgreSQL identifier (role names come from configuration).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// True when `err` is a unique-constraint violation on `constraint` (matched by name on
/// PostgreSQL, by `table.column` list on SQLite, whose messages name columns, not constraints).
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str, sqlite_columns: &str) -> bool {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            db.constraint() == Some(constraint) || db.message().contains(sqlite_columns)
        }
        _ => false,
    }
}
