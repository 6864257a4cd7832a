//! The `switchyard` binary: first start, key and tenant commands, configuration, shutdown.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use clap::Parser as _;
use common::process::{free_port, key_in, run, stdout, switchyard, terminate, wait_ready};
use common::{Engine, TestDb, TestServer};
use reqwest::StatusCode;

on_both_engines!(
    first_start_prints_a_working_admin_key_once_and_sigterm_stops_cleanly,
    keys_commands_mint_list_and_revoke,
    tenants_are_created_only_in_multi_mode,
);

async fn first_start_prints_a_working_admin_key_once_and_sigterm_stops_cleanly(engine: Engine) {
    let db = TestDb::create(engine).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = switchyard(&db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let curl_line = loop {
        let line = lines
            .next()
            .expect("serve prints the first-start notice")
            .unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.trim_start().starts_with("curl ") {
            break line;
        }
    };
    let key = key_in(&printed).expect("the key is printed");
    assert!(
        curl_line.contains(&format!("Authorization: Bearer {key}")),
        "{curl_line}"
    );
    let url = curl_line.split_whitespace().last().unwrap();
    assert_eq!(url, format!("{base}/v1/whoami"));
    wait_ready(&base).await;
    let me = reqwest::Client::new()
        .get(url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK, "the printed curl line works");
    let status = terminate(&mut child);
    assert!(status.success(), "SIGTERM is a clean exit: {status}");

    let mut again = switchyard(&db)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base).await;
    assert!(terminate(&mut again).success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut again.stdout.take().unwrap(), &mut rest).unwrap();
    assert!(
        key_in(&rest).is_none(),
        "the key is never printed again: {rest}"
    );
}

async fn keys_commands_mint_list_and_revoke(engine: Engine) {
    let srv = TestServer::start(engine).await;
    let created = run(switchyard(&srv.db).args([
        "keys",
        "create",
        "--name",
        "HubSpot",
        "--scope",
        "events:write",
    ]));
    assert!(created.status.success(), "{created:?}");
    let key = key_in(&stdout(&created)).expect("the new key is printed");
    let id = stdout(&created)
        .lines()
        .find_map(|l| l.strip_prefix("id:").map(|id| id.trim().to_owned()))
        .unwrap();
    let (status, me) = srv.get("/v1/whoami", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["scopes"], serde_json::json!(["events:write"]));

    let listed = stdout(&run(switchyard(&srv.db).args(["keys", "list"])));
    assert!(
        listed.contains(&id) && listed.contains("HubSpot"),
        "{listed}"
    );
    assert!(!listed.contains(&key[16..]), "lists never show secrets");

    let revoked = run(switchyard(&srv.db).args(["keys", "revoke", &id]));
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(
        srv.get("/v1/whoami", &key).await.0,
        StatusCode::UNAUTHORIZED
    );

    let bad_scope =
        run(switchyard(&srv.db).args(["keys", "create", "--name", "x", "--scope", "root"]));
    assert!(!bad_scope.status.success());
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("unknown scope"));
    let no_tenant = run(switchyard(&srv.db).args(["keys", "list", "--tenant", "nope"]));
    assert!(!no_tenant.status.success(), "an unknown tenant is an error");
    assert!(String::from_utf8_lossy(&no_tenant.stderr).contains("no tenant"));
    srv.stop().await;
}

async fn tenants_are_created_only_in_multi_mode(engine: Engine) {
    let srv = TestServer::start_with(engine, &["--tenancy", "multi"]).await;
    let single = run(switchyard(&srv.db).args(["tenants", "create", "--slug", "acme"]));
    assert!(!single.status.success());
    assert!(String::from_utf8_lossy(&single.stderr).contains("SWITCHYARD_TENANCY=multi"));

    let created = run(switchyard(&srv.db).args([
        "--tenancy",
        "multi",
        "tenants",
        "create",
        "--slug",
        "acme",
    ]));
    assert!(created.status.success(), "{created:?}");
    let key = key_in(&stdout(&created)).unwrap();
    let (status, me) = srv.get("/t/acme/v1/whoami", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["tenant_slug"].as_str(), me["kind"].as_str()),
        (Some("acme"), Some("admin"))
    );

    for (slug, message) in [
        ("acme", "already exists"),
        ("admin", "reserved"),
        ("Acme!", "3 to 30"),
    ] {
        let refused = run(switchyard(&srv.db).args([
            "--tenancy",
            "multi",
            "tenants",
            "create",
            "--slug",
            slug,
        ]));
        assert!(!refused.status.success(), "{slug}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(message), "{slug}: {stderr}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(switchyard_pg_tests),
    ignore = "PostgreSQL-mode start-up: set SWITCHYARD_TEST_DATABASE_URL"
)]
async fn postgres_mode_refuses_to_start_without_a_secrets_key() {
    let db = TestDb::create(Engine::Postgres).await;
    // The port is taken: the configuration error is still the one reported, before binding.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = run(switchyard(&db)
        .env_remove("SWITCHYARD_SECRETS_KEY")
        .args(["serve", "--listen", &listen]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SWITCHYARD_SECRETS_KEY is required"),
        "{stderr}"
    );
}

#[test]
fn a_bad_setting_is_reported_before_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite:{}", dir.path().join("x.db").display()),
        )
        .env("SWITCHYARD_PUBLIC_URL", "ftp://hub.example.com")
        .args(["serve", "--listen", &listen])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SWITCHYARD_PUBLIC_URL must be an http(s) URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
}

#[test]
fn help_and_readme_document_the_same_settings() {
    let help = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("\n## ")
        .find(|section| section.starts_with("Configuration"))
        .expect("the README has a Configuration section");
    let variables = |text: &str| {
        let mut found: Vec<String> = text
            .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|w| {
                (w.starts_with("SWITCHYARD_") && w.len() > 11) || w.starts_with("DATABASE_URL")
            })
            .map(str::to_owned)
            .collect();
        found.sort();
        found.dedup();
        found
    };
    assert!(!variables(&help).is_empty());
    assert_eq!(variables(&help), variables(table));
}

/// The embedded database holds hashed keys and sealed secrets, but also every partner's e-mail:
/// its files, and the secrets key generated beside it, are readable by their owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_and_the_generated_key_file_are_private() {
    use std::os::unix::fs::PermissionsExt;

    common::clear_environment();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("hub.db");
    let args = [
        "switchyard",
        "--database-url",
        &format!("sqlite:{}", database.display()),
        "--listen",
        "127.0.0.1:0",
        "serve",
    ];
    let config = switchyard::cli::Cli::try_parse_from(args).unwrap().config;
    assert!(config.secrets_key.is_none(), "started without a key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = switchyard::app::start(config, Default::default(), listener)
        .await
        .unwrap();
    let admin = running.first_start.as_ref().unwrap().key.plaintext.clone();
    let created = reqwest::Client::new()
        .post(format!("http://{}/v1/partners", running.addr))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"email": "ada@example.com", "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    for name in ["hub.db", "hub.db-wal", "hub.db-shm", "hub.db.key"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
    }
    running.shutdown().await.unwrap();
}
