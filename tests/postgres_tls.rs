//! TLS to PostgreSQL: `sslmode` in `DATABASE_URL` (and `DATABASE_URL_APP`) is honoured. The
//! local server has TLS on; the server's own connections are checked in `pg_stat_ssl`.
//! PostgreSQL only, by nature: SQLite has no connection to encrypt.

mod common;

use common::{Engine, TestDb};
use switchyard::db::Db;

/// Whether this connection of `db` is encrypted, as the server sees it.
async fn encrypted(db: &Db) -> bool {
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(db.pool())
            .await
            .unwrap();
    ssl
}

fn with_sslmode(url: &str, mode: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.query_pairs_mut().append_pair("sslmode", mode);
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(switchyard_pg_tests),
    ignore = "TLS to PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL"
)]
async fn sslmode_in_the_url_decides_whether_the_connection_is_encrypted() {
    let db = TestDb::create(Engine::Postgres).await;
    let required = Db::connect(&with_sslmode(&db.url, "require"), 1)
        .await
        .unwrap();
    assert!(encrypted(&required).await, "sslmode=require encrypts");
    required.close().await;
    let disabled = Db::connect(&with_sslmode(&db.url, "disable"), 1)
        .await
        .unwrap();
    assert!(!encrypted(&disabled).await, "sslmode=disable does not");
    disabled.close().await;
    // verify-full needs the server's certificate to chain to a trusted root: the local
    // server's is self-signed, so the connection is refused rather than silently unverified.
    let verified = Db::connect(&with_sslmode(&db.url, "verify-full"), 1).await;
    assert!(verified.is_err(), "an unverifiable certificate is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(switchyard_pg_tests),
    ignore = "TLS to PostgreSQL: set SWITCHYARD_TEST_DATABASE_URL"
)]
async fn the_server_runs_over_tls_for_both_of_its_roles() {
    let db = TestDb::create(Engine::Postgres).await;
    let owner = with_sslmode(&db.url, "require");
    let app = with_sslmode(db.app_url.as_deref().unwrap(), "require");
    let config = db.config(&["--database-url", &owner, "--database-url-app", &app]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = switchyard::app::start(config, switchyard::clock::Clock::default(), listener)
        .await
        .expect("the server starts over TLS");
    assert!(
        encrypted(&running.state.db).await,
        "the application role's pool is encrypted"
    );
    let base = format!("http://{}", running.addr);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    running.shutdown().await.unwrap();
}
