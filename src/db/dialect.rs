//! The few places where SQLite and PostgreSQL differ, in one type.
//!
//! Every query in Switchyard is written once in the portable subset of SQL both engines accept
//! (`$1` placeholders, `TEXT`/`BIGINT` columns, `ON CONFLICT`, `RETURNING`). What cannot be
//! written portably — connection pragmas, how a write transaction starts, the row-level-security
//! session setting — lives here and nowhere else.

use sqlx::{AnyConnection, Executor};

/// The database engine behind a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The per-transaction PostgreSQL setting the row-level-security policies compare `tenant_id` with.
pub const TENANT_SETTING: &str = "switchyard.tenant_id";
/// The per-transaction setting that lets the authentication lookup see exactly one API key row
/// (the one whose public prefix was presented) before the tenant is known.
pub const KEY_PREFIX_SETTING: &str = "switchyard.key_prefix";
/// The per-transaction setting that lets the click router see exactly one link row (the one whose
/// key was requested) before the tenant is known.
pub const LINK_KEY_SETTING: &str = "switchyard.link_key";

impl Dialect {
    /// The `VALUES` list of a statement whose only parameters are `rows` tuples of `columns`:
    /// `($1, $2), ($3, $4)` on PostgreSQL, `(?, ?), (?, ?)` on SQLite. SQLite looks a numbered
    /// parameter's name up by a linear scan, once per parameter when binding, which makes a
    /// statement with thousands of `$N` cost quadratic time; anonymous ones bind in order.
    pub fn values(self, rows: usize, columns: usize) -> String {
        use std::fmt::Write as _;
        let mut values = String::with_capacity(rows * columns * 6);
        for row in 0..rows {
            values.push_str(if row == 0 { "(" } else { ", (" });
            for column in 1..=columns {
                if column > 1 {
                    values.push_str(", ");
                }
                match self {
                    Dialect::Sqlite => values.push('?'),
                    Dialect::Postgres => {
                        let _ = write!(values, "${}", row * columns + column);
                    }
                }
            }
            values.push(')');
        }
        values
    }

    /// A table named `alias` with `columns` (name, SQL type), read from the statement's first
    /// parameter: a JSON array with one object per row. A batch then binds one value and its
    /// statement is the same whatever the batch's size, so it is parsed and planned once per
    /// connection instead of once per size.
    pub fn json_rows(self, alias: &str, columns: &[(&str, &str)]) -> String {
        let list = |each: &dyn Fn(&str, &str) -> String| {
            columns
                .iter()
                .map(|(name, ty)| each(name, ty))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Dialect::Postgres => format!(
                "json_to_recordset($1::json) AS {alias}({})",
                list(&|name, ty| format!("{name} {ty}"))
            ),
            Dialect::Sqlite => format!(
                "(SELECT {} FROM json_each($1)) AS {alias}",
                list(&|name, _| format!("value ->> '{name}' AS {name}"))
            ),
        }
    }

    /// A PostgreSQL array literal of `items` (`{"a","b"}`), to bind as text and cast to an
    /// array type (`$1::text[]`, `$2::bigint[]`): each item quoted, with its quotes and
    /// backslashes escaped.
    pub fn array_literal<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
        let mut literal = String::from("{");
        for (n, item) in items.into_iter().enumerate() {
            if n > 0 {
                literal.push(',');
            }
            literal.push('"');
            let mut rest = item.as_ref();
            while let Some(at) = rest.find(['"', '\\']) {
                literal.push_str(&rest[..at]);
                literal.push('\\');
                literal.push_str(&rest[at..=at]);
                rest = &rest[at + 1..];
            }
            literal.push_str(rest);
            literal.push('"');
        }
        literal.push('}');
        literal
    }

    /// The parameter [`Dialect::json_rows`] reads: `rows` as a JSON array of objects.
    pub fn json_param<T: serde::Serialize>(rows: &[T]) -> sqlx::Result<String> {
        serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(e.into()))
    }

    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("unsupported database URL {url:?}: use sqlite:PATH or postgres://...")
        }
    }

    /// Settings applied to every new connection. SQLite gets WAL (readers never block the
    /// writer), a busy timeout (writers queue instead of failing) and enforced foreign keys.
    pub(crate) async fn prepare_connection(self, conn: &mut AnyConnection) -> sqlx::Result<()> {
        if self == Self::Sqlite {
            for pragma in [
                "PRAGMA journal_mode = WAL",
                "PRAGMA busy_timeout = 10000",
                "PRAGMA foreign_keys = ON",
                "PRAGMA synchronous = NORMAL",
            ] {
                conn.execute(pragma).await?;
            }
        }
        Ok(())
    }

    /// The statement that opens a transaction that will write. SQLite takes the write lock up
    /// front (`IMMEDIATE`): a deferred transaction that reads and then writes can fail with
    /// `SQLITE_BUSY` when another writer committed in between, and the busy timeout cannot help.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// The statement that opens a write transaction whose commit may be lost in a database
    /// crash (see [`super::Db::write_unflushed`]). PostgreSQL then commits without
    /// waiting for the WAL flush; SQLite (WAL, `synchronous = NORMAL`) never waits for one.
    pub(crate) fn begin_unflushed(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN; SET LOCAL synchronous_commit = off",
        }
    }

    /// The job queue's name for this engine.
    pub fn queue_engine(self) -> job_queue::Engine {
        match self {
            Self::Sqlite => job_queue::Engine::Sqlite,
            Self::Postgres => job_queue::Engine::Postgres,
        }
    }

    /// SQL that sets a per-transaction session value the RLS policies read, or `None` where the
    /// engine has no RLS (SQLite relies on the `tenant_id` filter every query carries).
    pub(crate) fn set_local(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some("SELECT set_config($1, $2, true)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dialect;

    #[test]
    fn multi_row_values_number_parameters_in_order() {
        assert_eq!(Dialect::Postgres.values(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Dialect::Sqlite.values(2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn array_literals_quote_and_escape_every_item() {
        assert_eq!(
            Dialect::array_literal(["plain", "", r#"a "quoted" \ one"#, r"{x,y}\"]),
            r#"{"plain","","a \"quoted\" \\ one","{x,y}\\"}"#
        );
        assert_eq!(Dialect::array_literal(Vec::<&str>::new()), "{}");
    }

    #[test]
    fn json_rows_name_their_columns() {
        let columns = [("id", "text"), ("at", "bigint")];
        assert_eq!(
            Dialect::Postgres.json_rows("v", &columns),
            "json_to_recordset($1::json) AS v(id text, at bigint)"
        );
        assert_eq!(
            Dialect::Sqlite.json_rows("v", &columns),
            "(SELECT value ->> 'id' AS id, value ->> 'at' AS at FROM json_each($1)) AS v"
        );
    }

    #[test]
    fn recognises_engines_by_scheme() {
        assert_eq!(
            Dialect::from_url("sqlite:switchyard.db").unwrap(),
            Dialect::Sqlite
        );
        assert_eq!(
            Dialect::from_url("sqlite://x.db?mode=rwc").unwrap(),
            Dialect::Sqlite
        );
        assert_eq!(
            Dialect::from_url("postgres://h/db").unwrap(),
            Dialect::Postgres
        );
        assert_eq!(
            Dialect::from_url("postgresql://h/db").unwrap(),
            Dialect::Postgres
        );
        assert!(Dialect::from_url("mysql://h/db").is_err());
    }
}
