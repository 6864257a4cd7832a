//! Running the `switchyard` binary itself, as operators do.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{TestDb, SECRETS_KEY};

/// The binary with a clean environment pointed at `db`.
pub fn switchyard(db: &TestDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("SWITCHYARD_SECRETS_KEY", SECRETS_KEY)
        .env("SWITCHYARD_LOG", "warn");
    if let Some(app_url) = &db.app_url {
        command.env("DATABASE_URL_APP", app_url);
    }
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(format!("{base}/readyz")).await {
            if response.status() == StatusCode::OK {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} never became ready");
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

pub fn key_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| c == '\''))
        .find(|word| word.starts_with("sy_") && word.len() == 3 + 12 + 1 + 32)
        .map(str::to_owned)
}
