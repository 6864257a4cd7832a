//! The command line: `serve`, `migrate`, `openapi`, `keys` and `tenants`.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{self, FirstStart};
use crate::clock::Clock;
use crate::config::{Config, LogFormat, Tenancy};
use crate::db::Db;
use crate::keys::{self, IssuedKey, KeyKind, NewKey, Scope};
use crate::tenants;

/// Switchyard: a self-hostable integration hub for partner programs.
///
/// Every option can also be set through the environment variable shown beside it.
#[derive(Parser, Debug)]
#[command(name = "switchyard", version)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub: migrate, create the default tenant and an admin key on first start, serve HTTP.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create tenants (multi-tenant mode).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Manage the secrets key.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Re-seal every stored secret under SWITCHYARD_SECRETS_KEY, opening the old ones with
    /// SWITCHYARD_SECRETS_KEY_PREVIOUS. Safe to run again; the server may keep running.
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Mint a key and print it once.
    Create {
        /// Tenant slug.
        #[arg(long, default_value = tenants::DEFAULT_SLUG)]
        tenant: String,
        /// What the key is for.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = KindArg::Scoped)]
        kind: KindArg,
        /// A scope for a scoped key; repeat for several (events:write, partners:read, ...).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The partner a partner key acts as (`ptr_...`).
        #[arg(long)]
        partner: Option<String>,
    },
    /// List a tenant's keys (never their secrets).
    List {
        #[arg(long, default_value = tenants::DEFAULT_SLUG)]
        tenant: String,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        /// Key id (`key_...`).
        id: String,
        #[arg(long, default_value = tenants::DEFAULT_SLUG)]
        tenant: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Admin,
    Scoped,
    Partner,
}

impl From<KindArg> for KeyKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Admin => KeyKind::Admin,
            KindArg::Scoped => KeyKind::Scoped,
            KindArg::Partner => KeyKind::Partner,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant and its first admin key (multi-tenant mode only).
    Create {
        /// 3 to 30 characters of a-z, 0-9 and '-'.
        #[arg(long)]
        slug: String,
        /// Display name; defaults to the slug.
        #[arg(long)]
        name: Option<String>,
        /// Region for the tenant's phone numbers written without a country code (e.g. `US`);
        /// defaults to `SWITCHYARD_PHONE_REGION`.
        #[arg(long, value_parser = crate::identities::parse_region)]
        phone_region: Option<phonenumber::country::Id>,
    },
    /// Change a tenant's settings.
    Update {
        #[arg(long)]
        slug: String,
        /// The tenant's customer (`cus_...`) in the operator's Stripe account, billed by usage
        /// from now on; `none` stops billing it.
        #[arg(long)]
        billing_customer: Option<String>,
        /// Region for the tenant's phone numbers written without a country code.
        #[arg(long, value_parser = crate::identities::parse_region)]
        phone_region: Option<phonenumber::country::Id>,
    },
}

pub fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            app::open_migrated(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", crate::http::openapi::document_json());
            Ok(())
        }
        Command::Keys { command } => keys_command(&config, command).await,
        Command::Tenants { command } => tenants_command(&config, command).await,
        Command::Secrets {
            command: SecretsCommand::Rotate,
        } => {
            let secrets = app::load_secrets(&config)?;
            let db = app::open_migrated(&config).await?;
            let rotated = crate::secrets::rotate(&db, &secrets).await;
            db.close().await;
            let rotated = rotated?;
            println!(
                "re-sealed {} secrets under the current key ({} were already under it)",
                rotated.resealed, rotated.current
            );
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Configuration mistakes are reported as such, before the port is taken.
    app::check(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let public_url = config.public_url();
    let stop = app::shutdown_signal();
    let running = app::start(config, Clock::default(), listener).await?;
    if let Some(FirstStart { tenant, key }) = &running.first_start {
        println!(
            "\nFirst start: created tenant {:?} and an admin API key. It is shown only this once:\n\n    {}\n\nTry it:\n\n    curl -H 'Authorization: Bearer {}' {public_url}/v1/whoami\n",
            tenant.slug, key.plaintext, key.plaintext
        );
    }
    stop.await;
    running.shutdown().await
}

async fn tenant_id(db: &Db, slug: &str) -> anyhow::Result<String> {
    let mut tx = db.write_global().await?;
    let tenant = tenants::find_by_slug(&mut tx, slug).await?;
    tx.commit().await?;
    tenant
        .map(|t| t.id)
        .with_context(|| format!("no tenant with slug {slug:?}"))
}

fn print_issued(issued: &IssuedKey) {
    println!("id:     {}", issued.key.id);
    println!("kind:   {}", issued.key.kind.as_str());
    if !issued.key.scopes.is_empty() {
        let scopes: Vec<_> = issued.key.scopes.iter().map(|s| s.as_str()).collect();
        println!("scopes: {}", scopes.join(" "));
    }
    println!("key:    {}", issued.plaintext);
    println!("\nStore the key now: it is not shown again.");
}

async fn keys_command(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let db = app::open_migrated(config).await?;
    let clock = Clock::default();
    match command {
        KeysCommand::Create {
            tenant,
            name,
            kind,
            scopes,
            partner,
        } => {
            let tenant_id = tenant_id(&db, &tenant).await?;
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s).with_context(|| format!("unknown scope {s:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut tx = db.write(&tenant_id).await?;
            let new = NewKey {
                name,
                kind: kind.into(),
                scopes,
                partner_id: partner,
            };
            let issued = keys::issue(&mut tx, &clock, &tenant_id, new).await?;
            tx.commit().await?;
            print_issued(&issued);
        }
        KeysCommand::List { tenant } => {
            let tenant_id = tenant_id(&db, &tenant).await?;
            let mut cursor: Option<String> = None;
            println!(
                "{:<31} {:<8} {:<16} {:<8} NAME / SCOPES",
                "ID", "KIND", "PREFIX", "STATUS"
            );
            loop {
                let page = crate::http::pagination::Page::new(Some(200), cursor.as_deref())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut tx = db.read(&tenant_id).await?;
                let rows = keys::list(&mut tx, &tenant_id, None, &page).await?;
                tx.commit().await?;
                let list = page.finish(rows, |k| (k.created_at, &k.id));
                for key in list.data.into_iter().map(keys::ApiKey::from) {
                    let scopes: Vec<_> = key.scopes.iter().map(|s| s.as_str()).collect();
                    let status = if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<31} {:<8} {:<16} {:<8} {} [{}]",
                        key.id,
                        key.kind.as_str(),
                        key.prefix,
                        status,
                        key.name,
                        scopes.join(" ")
                    );
                }
                match list.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        KeysCommand::Revoke { id, tenant } => {
            let tenant_id = tenant_id(&db, &tenant).await?;
            let mut tx = db.write(&tenant_id).await?;
            let found = keys::revoke(&mut tx, &tenant_id, &id, clock.now_ms()).await?;
            tx.commit().await?;
            anyhow::ensure!(found, "tenant {tenant:?} has no key {id:?}");
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn tenants_command(config: &Config, command: TenantsCommand) -> anyhow::Result<()> {
    let (slug, name, phone_region) = match command {
        TenantsCommand::Create {
            slug,
            name,
            phone_region,
        } => (slug, name, phone_region),
        TenantsCommand::Update {
            slug,
            billing_customer,
            phone_region,
        } => return update_tenant(config, &slug, billing_customer, phone_region).await,
    };
    anyhow::ensure!(
        config.tenancy == Tenancy::Multi,
        "this hub runs in single-tenant mode; set SWITCHYARD_TENANCY=multi to create tenants"
    );
    let db = app::open_migrated(config).await?;
    let clock = Clock::default();
    let mut tx = db.write_global().await?;
    let name = name.unwrap_or_else(|| slug.clone());
    let tenant = tenants::create(&mut tx, &clock, &slug, &name).await?;
    if let Some(region) = phone_region {
        tenants::set_phone_region(&mut tx, &tenant.id, Some(region.as_ref())).await?;
    }
    db.set_local(&mut tx, crate::db::TENANT_SETTING, &tenant.id)
        .await?;
    let issued = keys::issue(
        &mut tx,
        &clock,
        &tenant.id,
        NewKey {
            name: "first admin key".to_owned(),
            kind: KeyKind::Admin,
            scopes: Vec::new(),
            partner_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    println!("created tenant {} ({})\n", tenant.slug, tenant.id);
    print_issued(&issued);
    Ok(())
}

async fn update_tenant(
    config: &Config,
    slug: &str,
    billing_customer: Option<String>,
    phone_region: Option<phonenumber::country::Id>,
) -> anyhow::Result<()> {
    let db = app::open_migrated(config).await?;
    let tenant_id = tenant_id(&db, slug).await?;
    let mut tx = db.write(&tenant_id).await?;
    if let Some(region) = phone_region {
        tenants::set_phone_region(&mut tx, &tenant_id, Some(region.as_ref())).await?;
    }
    match billing_customer.as_deref().map(str::trim) {
        Some("none") => tenants::set_billing_customer(&mut tx, &tenant_id, None).await?,
        Some(customer) => {
            anyhow::ensure!(
                customer.starts_with("cus_") && customer.len() <= 255,
                "--billing-customer must be a Stripe customer id (cus_...) or none"
            );
            tenants::set_billing_customer(&mut tx, &tenant_id, Some(customer)).await?;
            crate::stripe::meters::start_mark(&mut tx, &tenant_id, Clock::default().now_ms())
                .await?;
        }
        None => {}
    }
    tx.commit().await?;
    println!("updated tenant {slug}");
    Ok(())
}
