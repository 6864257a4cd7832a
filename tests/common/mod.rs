//! The integration harness: the real server, on a real database, on an ephemeral port.
//!
//! Every story runs once per engine (see [`on_both_engines!`]): SQLite in a temporary file
//! always, PostgreSQL in a freshly created database when `SWITCHYARD_TEST_DATABASE_URL` names a
//! server. On PostgreSQL the server connects as a restricted role, exactly like production, so
//! row-level security is in force during every test.

#![allow(dead_code)]

pub mod network;
pub mod process;
pub mod receiver;
pub mod stripe;

use std::sync::Once;

use clap::Parser as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use switchyard::app::{self, Running};
use switchyard::clock::Clock;
use switchyard::config::Config;

/// Generates `story::sqlite` and `story::postgres` tests from `async fn story(engine: Engine)`.
#[macro_export]
macro_rules! on_both_engines {
    ($($story:ident),+ $(,)?) => {$(
        mod $story {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$story($crate::common::Engine::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(switchyard_pg_tests),
                ignore = "set SWITCHYARD_TEST_DATABASE_URL to run on PostgreSQL"
            )]
            async fn postgres() {
                super::$story($crate::common::Engine::Postgres).await
            }
        }
    )+};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The secrets key every test server uses.
pub const SECRETS_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The restricted role the server connects as on PostgreSQL: no superuser, no BYPASSRLS.
pub const APP_ROLE: &str = "switchyard_test_app";

/// A database made for one test and dropped after it.
pub struct TestDb {
    pub engine: Engine,
    /// The owner's URL: migrations, and the tests' own inspection queries.
    pub url: String,
    /// PostgreSQL: the restricted role's URL the server uses.
    pub app_url: Option<String>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

pub fn server_url() -> String {
    std::env::var("SWITCHYARD_TEST_DATABASE_URL")
        .expect("PostgreSQL tests need SWITCHYARD_TEST_DATABASE_URL")
}

/// The settings of the shell must not reach the in-process servers: a test says what it runs
/// with. (Their configuration is parsed from options *and* the environment.)
pub fn clear_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let setting = (name.starts_with("SWITCHYARD_") && !name.starts_with("SWITCHYARD_TEST"))
                || name.starts_with("DATABASE_URL")
                || name.starts_with("STRIPE_");
            if setting {
                std::env::remove_var(name);
            }
        }
    });
}

fn init_tracing() {
    clear_environment();
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("SWITCHYARD_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .with_test_writer()
            .try_init();
    });
}

impl TestDb {
    pub async fn create(engine: Engine) -> TestDb {
        init_tracing();
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite:{}", dir.path().join("switchyard.db").display());
                TestDb {
                    engine,
                    url,
                    app_url: None,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Engine::Postgres => {
                use sqlx::Connection as _;
                let server = server_url();
                let name = format!("sy_test_{}", ulid::Ulid::new().to_string().to_lowercase());
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                // Roles are cluster-wide: create it once, tolerating a concurrent creator.
                sqlx::query(&format!(
                    "DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                ))
                .execute(&mut admin)
                .await
                .expect("create application role");
                admin.close().await.ok();
                let mut url = url::Url::parse(&server).expect("SWITCHYARD_TEST_DATABASE_URL");
                url.set_path(&name);
                let mut app = url.clone();
                app.set_username(APP_ROLE).unwrap();
                app.set_password(None).unwrap();
                TestDb {
                    engine,
                    url: url.to_string(),
                    app_url: Some(app.to_string()),
                    _dir: None,
                    pg: Some((server, name)),
                }
            }
        }
    }

    /// Configuration for a server on this database; `extra` are further command-line options.
    pub fn config(&self, extra: &[&str]) -> Config {
        let mut options = vec![
            ("--database-url", self.url.clone()),
            ("--secrets-key", SECRETS_KEY.to_owned()),
            ("--rate-limit-per-key", "10000".to_owned()),
            ("--rate-limit-per-ip", "10000".to_owned()),
            ("--listen", "127.0.0.1:0".to_owned()),
            // Receivers in tests listen on loopback, which the SSRF guard refuses by default.
            ("--outbound-allow", "127.0.0.0/8".to_owned()),
        ];
        if let Some(app_url) = &self.app_url {
            options.push(("--database-url-app", app_url.clone()));
        }
        let mut args = vec!["switchyard".to_owned()];
        for (flag, value) in options {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("serve".to_owned());
        switchyard::cli::Cli::try_parse_from(args)
            .expect("test configuration parses")
            .config
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.pg.take() else {
            return;
        };
        // Drop runs outside async context guarantees: use a private runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running Switchyard and an HTTP client for it.
pub struct TestServer {
    pub base: String,
    /// The admin key created on first start.
    pub admin_key: String,
    pub tenant_id: String,
    pub clock: Clock,
    pub running: Option<Running>,
    pub client: reqwest::Client,
    pub db: TestDb,
}

impl TestServer {
    pub async fn start(engine: Engine) -> TestServer {
        Self::start_with(engine, &[]).await
    }

    /// Starts a server with extra command-line options, e.g. `["--tenancy", "multi"]`.
    pub async fn start_with(engine: Engine, extra: &[&str]) -> TestServer {
        let db = TestDb::create(engine).await;
        let config = db.config(extra);
        let clock = Clock::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = app::start(config, clock.clone(), listener)
            .await
            .expect("server starts");
        let first = running
            .first_start
            .as_ref()
            .expect("an empty database gets a default tenant and admin key");
        TestServer {
            base: format!("http://{}", running.addr),
            admin_key: first.key.plaintext.clone(),
            tenant_id: first.tenant.id.clone(),
            clock,
            running: Some(running),
            // Redirects are answers to check (the click router's 302), not to follow.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the raw response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request reaches the server")
    }

    /// Sends a request; returns the status and the JSON body (`Null` when there is none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, key, body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(&body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Mints a key through the API with the admin key; returns (id, plaintext).
    pub async fn mint(&self, body: Value) -> (String, String) {
        let (status, key) = self.post("/v1/api-keys", &self.admin_key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        (
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// The database as its owner, for a test's own inspection queries (RLS does not apply).
    pub async fn inspect(&self) -> switchyard::db::Db {
        switchyard::db::Db::connect(&self.db.url, 2).await.unwrap()
    }

    /// Another connection holding the write lock on `table` until the transaction ends (the
    /// database stays readable): what a database too busy to take those writes looks like. On
    /// SQLite the lock is the whole database's.
    pub async fn lock_table(
        &self,
        table: &str,
    ) -> (switchyard::db::Db, sqlx::Transaction<'static, sqlx::Any>) {
        let holder = self.inspect().await;
        let mut lock = holder.pool().begin().await.unwrap();
        let take_lock = match self.db.engine {
            Engine::Sqlite => format!("DELETE FROM {table} WHERE 1 = 0"),
            Engine::Postgres => format!("LOCK TABLE {table} IN EXCLUSIVE MODE"),
        };
        sqlx::query(&take_lock).execute(&mut *lock).await.unwrap();
        (holder, lock)
    }

    /// The `/metrics` exposition as text.
    pub async fn metrics(&self) -> String {
        self.send(Method::GET, "/metrics", None, None)
            .await
            .text()
            .await
            .expect("metrics text")
    }

    /// Follows a share link without following the redirect: (status, `Location`).
    pub async fn click(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>) {
        let mut request = self.client.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request reaches the server");
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), location)
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(key), Some(&body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(key), Some(&body)).await
    }

    /// Creates a partner through the API; returns its representation.
    pub async fn partner(&self, email: &str) -> Value {
        let (status, partner) = self
            .post(
                "/v1/partners",
                &self.admin_key,
                serde_json::json!({"email": email, "name": "P"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{partner}");
        partner
    }

    /// Creates a campaign through the API with `extra` fields; returns its representation.
    pub async fn campaign(&self, extra: Value) -> Value {
        let mut body = serde_json::json!({
            "name": "Spring",
            "destination_url": "https://shop.example.com/landing",
            "commission": {"type": "percent", "bps": 1500},
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, campaign) = self.post("/v1/campaigns", &self.admin_key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{campaign}");
        campaign
    }

    /// The event types of the messages emitted so far, oldest first, with their payloads.
    pub async fn messages(&self) -> Vec<(String, Value)> {
        let db = self.inspect().await;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT event_type, payload FROM messages ORDER BY created_at, id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        db.close().await;
        rows.into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).unwrap()))
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Asserts an RFC 9457 problem with `status` and `code`; returns the document.
#[track_caller]
pub fn assert_problem(response: &(StatusCode, Value), status: StatusCode, code: &str) -> Value {
    assert_eq!(response.0, status, "{}", response.1);
    assert_eq!(response.1["code"], code, "{}", response.1);
    assert_eq!(response.1["status"], status.as_u16(), "{}", response.1);
    assert_eq!(response.1["type"], format!("urn:switchyard:problem:{code}"));
    response.1.clone()
}

/// Creates another tenant (as `switchyard tenants create` does) with a first admin key;
/// returns (tenant id, admin key).
pub async fn create_tenant(srv: &TestServer, slug: &str) -> (String, String) {
    use switchyard::{db::Db, keys, tenants};
    let db = Db::connect(&srv.db.url, 1).await.unwrap();
    let mut tx = db.write_global().await.unwrap();
    let tenant = tenants::create(&mut tx, &srv.clock, slug, slug)
        .await
        .unwrap();
    db.set_local(&mut tx, switchyard::db::TENANT_SETTING, &tenant.id)
        .await
        .unwrap();
    let new = keys::NewKey {
        name: "admin".to_owned(),
        kind: keys::KeyKind::Admin,
        scopes: Vec::new(),
        partner_id: None,
    };
    let issued = keys::issue(&mut tx, &srv.clock, &tenant.id, new)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    db.close().await;
    (tenant.id, issued.plaintext)
}
