//! Every setting of Switchyard, its default and its environment variable, in one typed struct.
//!
//! The same struct feeds `--help`, the README's configuration table and the running server;
//! a setting that is not here does not exist.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Args, Clone)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(
        long,
        env = "SWITCHYARD_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Database the server and migrations use: `sqlite:PATH` (embedded, created when missing)
    /// or `postgres://USER@HOST/DB` (the owner role: it runs migrations).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:switchyard.db",
        global = true
    )]
    pub database_url: String,

    /// PostgreSQL only: a restricted role the server connects as after migrating with
    /// DATABASE_URL. It is granted table access on migrate and stays subject to row-level security.
    #[arg(long, env = "DATABASE_URL_APP", global = true)]
    pub database_url_app: Option<String>,

    /// Largest number of pooled database connections.
    #[arg(
        long,
        env = "SWITCHYARD_DB_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub db_max_connections: u32,

    /// `single`: one default tenant. `multi`: more tenants with `switchyard tenants create`.
    #[arg(long, env = "SWITCHYARD_TENANCY", value_enum, default_value_t = Tenancy::Single, global = true)]
    pub tenancy: Tenancy,

    /// 32-byte key (hex or base64) that encrypts secrets at rest with AES-256-GCM. Required with
    /// PostgreSQL; with SQLite a key file is generated beside the database when unset.
    #[arg(
        long,
        env = "SWITCHYARD_SECRETS_KEY",
        hide_env_values = true,
        global = true
    )]
    pub secrets_key: Option<String>,

    /// Previous secrets keys (comma-separated), still used to open what they sealed while a
    /// rotation is under way: set the new key as SWITCHYARD_SECRETS_KEY and the old one here,
    /// run `switchyard secrets rotate`, then drop this.
    #[arg(
        long,
        env = "SWITCHYARD_SECRETS_KEY_PREVIOUS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub secrets_key_previous: Vec<String>,

    /// Base URL that clients reach this server at (used in the first-start curl line).
    /// Defaults to `http://` + the listen address.
    #[arg(long, env = "SWITCHYARD_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// Requests per second one API key may make (bursts up to the same number).
    #[arg(
        long,
        env = "SWITCHYARD_RATE_LIMIT_PER_KEY",
        default_value = "100",
        global = true
    )]
    pub rate_limit_per_key: std::num::NonZeroU32,

    /// Requests per second one client IP may make without a valid API key.
    #[arg(
        long,
        env = "SWITCHYARD_RATE_LIMIT_PER_IP",
        default_value = "20",
        global = true
    )]
    pub rate_limit_per_ip: std::num::NonZeroU32,

    /// Peers (comma-separated CIDRs, e.g. a load balancer's `10.0.0.0/8`) whose
    /// `X-Forwarded-For` is believed: from them, the client is the last address of the header
    /// that is not itself a trusted proxy. From anyone else the header is ignored.
    #[arg(
        long,
        env = "SWITCHYARD_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// A bearer token `/metrics` then requires (`Authorization: Bearer <token>`); unset, it is
    /// open.
    #[arg(
        long,
        env = "SWITCHYARD_METRICS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub metrics_token: Option<String>,

    /// Largest request body accepted, in bytes.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_BODY_BYTES",
        default_value_t = 1_048_576,
        global = true
    )]
    pub max_body_bytes: usize,

    /// Seconds a shutdown waits for in-flight requests before exiting anyway.
    #[arg(
        long,
        env = "SWITCHYARD_SHUTDOWN_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub shutdown_timeout_secs: u64,

    /// This node's identity, the same across its restarts and unique among the nodes sharing
    /// a database: a restarted node takes back at once the jobs its previous run held. Default:
    /// the host name and the port it listens on.
    #[arg(long, env = "SWITCHYARD_NODE_ID", global = true)]
    pub node_id: Option<String>,

    /// Seconds a worker holds a job before another node may take it over, should the worker
    /// die. Running jobs renew it every third of that; a shorter lease means a faster takeover.
    #[arg(
        long,
        env = "SWITCHYARD_JOB_LEASE_SECS",
        default_value_t = 60,
        global = true
    )]
    pub job_lease_secs: u64,

    /// Webhook deliveries one node has in flight at once. A delivery waiting on a slow
    /// receiver holds a slot but no database connection.
    #[arg(
        long,
        env = "SWITCHYARD_WEBHOOK_CONCURRENCY",
        default_value_t = 128,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub webhook_concurrency: u32,

    /// Hours a finished job is kept before it is purged (dead jobs are kept until replayed).
    #[arg(
        long,
        env = "SWITCHYARD_JOB_RETENTION_HOURS",
        default_value_t = 168,
        global = true
    )]
    pub job_retention_hours: u64,

    /// Region (ISO 3166 code) for phone numbers written without a country code, for tenants
    /// that set none of their own: `07911 123456` in `GB` is `+447911123456`.
    #[arg(
        long,
        env = "SWITCHYARD_PHONE_REGION",
        default_value = "GB",
        value_parser = crate::identities::parse_region,
        global = true
    )]
    pub phone_region: phonenumber::country::Id,

    /// Consecutive failed fires after which a partner's postback is disabled.
    #[arg(
        long,
        env = "SWITCHYARD_POSTBACK_DISABLE_AFTER",
        default_value_t = 10,
        global = true
    )]
    pub postback_disable_after: i64,

    /// Networks outbound requests may reach although they are not public, as comma-separated
    /// CIDRs (e.g. `10.0.0.0/8,127.0.0.0/8`). Everything else internal is refused (SSRF guard).
    #[arg(
        long,
        env = "SWITCHYARD_OUTBOUND_ALLOW",
        value_delimiter = ',',
        global = true
    )]
    pub outbound_allow: Vec<ipnet::IpNet>,

    /// Seconds an outbound request (a webhook delivery) may take.
    #[arg(
        long,
        env = "SWITCHYARD_WEBHOOK_TIMEOUT_SECS",
        default_value_t = 15,
        global = true
    )]
    pub webhook_timeout_secs: u64,

    /// Hours an endpoint may fail without a single success before it is disabled.
    #[arg(
        long,
        env = "SWITCHYARD_WEBHOOK_DISABLE_AFTER_HOURS",
        default_value_t = 120,
        global = true
    )]
    pub webhook_disable_after_hours: u64,

    /// The default tenant's Stripe secret key (`sk_...` or `rk_...`), used when `PUT /v1/stripe`
    /// has set none.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true, global = true)]
    pub stripe_secret_key: Option<String>,

    /// The default tenant's Stripe webhook signing secrets (`whsec_...`, comma-separated),
    /// accepted beside those set with `PUT /v1/stripe`.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub stripe_webhook_secrets: Vec<String>,

    /// Stripe's API base URL; set it only to use a local stand-in (tests). When set, it is
    /// allowlisted for the outbound SSRF guard.
    #[arg(long, env = "SWITCHYARD_STRIPE_API_BASE", global = true)]
    pub stripe_api_base: Option<String>,

    /// Requests per second this node sends to one Stripe account.
    #[arg(
        long,
        env = "SWITCHYARD_STRIPE_RATE_LIMIT",
        default_value = "25",
        global = true
    )]
    pub stripe_rate_limit: std::num::NonZeroU32,

    /// The operator's Stripe key for billing tenants by usage (meter events); unset, no usage
    /// is reported.
    #[arg(
        long,
        env = "SWITCHYARD_PLATFORM_STRIPE_KEY",
        hide_env_values = true,
        global = true
    )]
    pub platform_stripe_key: Option<String>,

    /// The Stripe Billing meter's event name that usage is reported to.
    #[arg(
        long,
        env = "SWITCHYARD_STRIPE_METER_EVENT",
        default_value = "switchyard_attributed_revenue",
        global = true
    )]
    pub stripe_meter_event: String,

    /// The one currency the meter counts (ISO 4217): attributed revenue in other currencies is
    /// not reported.
    #[arg(
        long,
        env = "SWITCHYARD_STRIPE_METER_CURRENCY",
        default_value = "USD",
        global = true
    )]
    pub stripe_meter_currency: String,

    /// When payouts run (UTC): a weekday and time (`mon 09:00`), `daily 09:00`, or `off` (runs
    /// only on demand, `POST /v1/payouts/run`). Every node may schedule it; each window runs once.
    #[arg(
        long,
        env = "SWITCHYARD_PAYOUT_SCHEDULE",
        default_value = "mon 09:00",
        value_parser = PayoutSchedule::parse,
        global = true
    )]
    pub payout_schedule: PayoutSchedule,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, for example `info` or `switchyard=debug,sqlx=warn`.
    #[arg(long, env = "SWITCHYARD_LOG", default_value = "info", global = true)]
    pub log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tenancy {
    Single,
    Multi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// When the periodic payout run fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutSchedule {
    /// `Mon`..`Sun`, or `*` for every day; `None` when off.
    day: Option<String>,
    hour: u32,
    minute: u32,
}

impl PayoutSchedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "off" {
            return Ok(Self {
                day: None,
                hour: 0,
                minute: 0,
            });
        }
        let invalid =
            || format!("{text:?}: expected `mon 09:00` (a weekday), `daily 09:00` or `off`");
        let (day, time) = text.split_once(' ').ok_or_else(invalid)?;
        let day = match day {
            "daily" => "*",
            "mon" | "tue" | "wed" | "thu" | "fri" | "sat" | "sun" => day,
            _ => return Err(invalid()),
        };
        let (hour, minute) = time.trim().split_once(':').ok_or_else(invalid)?;
        let hour: u32 = hour.parse().ok().filter(|h| *h < 24).ok_or_else(invalid)?;
        let minute: u32 = minute
            .parse()
            .ok()
            .filter(|m| *m < 60)
            .ok_or_else(invalid)?;
        Ok(Self {
            day: Some(day.to_owned()),
            hour,
            minute,
        })
    }

    /// The cron expression (with seconds) of the schedule; `None` when off.
    pub fn cron(&self) -> Option<String> {
        let day = self.day.as_deref()?;
        Some(format!("0 {} {} * * {day}", self.minute, self.hour))
    }
}

/// Only what is never secret: the database URLs may hold passwords, and several settings are
/// keys (`SWITCHYARD_SECRETS_KEY`, the Stripe keys and signing secrets).
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tenancy", &self.tenancy)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The URL printed in examples: the public URL when set, else the listen address.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The SQLite database file, when the database is a SQLite file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        crate::db::sqlite_file(&self.database_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["switchyard"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).config
    }

    #[test]
    fn finds_the_sqlite_file_in_every_url_form() {
        for (url, path) in [
            ("sqlite:switchyard.db", Some("switchyard.db")),
            ("sqlite://data/x.db?mode=rwc", Some("data/x.db")),
            ("sqlite:///var/lib/x.db", Some("/var/lib/x.db")),
            ("sqlite::memory:", None),
            ("postgres://localhost/x", None),
        ] {
            let config = parse(&["--database-url", url]);
            assert_eq!(config.sqlite_path(), path.map(PathBuf::from), "{url}");
        }
    }

    #[test]
    fn payout_schedules_read_as_cron() {
        let cron = |text: &str| PayoutSchedule::parse(text).map(|s| s.cron());
        assert_eq!(cron("mon 09:00"), Ok(Some("0 0 9 * * mon".to_owned())));
        assert_eq!(cron("Daily 23:45"), Ok(Some("0 45 23 * * *".to_owned())));
        assert_eq!(cron("off"), Ok(None));
        for bad in ["monday 09:00", "mon 24:00", "mon 9", "weekly", ""] {
            assert!(cron(bad).is_err(), "{bad}");
        }
        for day in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
            let expression = cron(&format!("{day} 06:30")).unwrap().unwrap();
            assert!(expression.parse::<cron::Schedule>().is_ok(), "{expression}");
        }
    }

    #[test]
    fn public_url_defaults_to_the_listen_address() {
        assert_eq!(
            parse(&["--listen", "127.0.0.1:9000"]).public_url(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            parse(&["--public-url", "https://hub.example.com/"]).public_url(),
            "https://hub.example.com"
        );
    }
}
