//! Share links and the click router, `GET /r/{link_key}`.
//!
//! The router is the hottest path of the hub, so it neither reads nor writes the database per
//! click on its own:
//!
//! - Link lookups are cached in memory for [`CACHE_TTL`] (a change made through this node is seen
//!   at once; other nodes see it within the TTL). Unknown keys are not cached.
//! - Clicks are group-committed: each request hands its click to one recorder task and waits
//!   until the transaction holding it has committed, so a visitor is redirected only once the
//!   click is durable. While one batch commits the next one gathers, so the cost of a commit is
//!   shared by every click that arrived meanwhile. A clean shutdown lets in-flight requests
//!   finish, so every redirected click is stored.
//! - Whether a click belongs to a revoked partner is decided by the insert's transaction, from
//!   the partner's status at that moment, not from the cache.

pub mod routes;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::{Db, GroupCommit};

pub use store::Click;

/// How long a cached link is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Cached links kept at most (the cache starts over when full).
const CACHE_CAPACITY: usize = 100_000;
/// Clicks written in one transaction at most.
const MAX_BATCH: usize = 512;

/// A link as the router uses it.
#[derive(Debug)]
pub struct Target {
    pub tenant_id: String,
    pub link_id: String,
    pub partner_id: String,
    pub campaign_id: String,
    pub destination: url::Url,
    pub allowed_domains: Vec<String>,
    pub click_param: String,
}

/// The click router's cache and its connection to the recorder task.
pub struct Links {
    db: Db,
    cache: Mutex<HashMap<String, (Instant, Arc<Target>)>>,
    recorder: GroupCommit<Click>,
}

#[derive(Debug, thiserror::Error)]
#[error("the click could not be stored")]
pub struct NotStored;

impl Links {
    /// Starts the recorder task on `db`.
    pub fn start(db: Db) -> Arc<Links> {
        let writer = db.clone();
        let recorder = GroupCommit::start(MAX_BATCH, move |clicks: Vec<Click>| {
            let db = writer.clone();
            async move {
                match store::insert_clicks(&db, &clicks).await {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::error!(error = %err, clicks = clicks.len(), "storing clicks failed");
                        false
                    }
                }
            }
        });
        Arc::new(Links {
            db,
            cache: Mutex::new(HashMap::new()),
            recorder,
        })
    }

    /// The link with `key`, from the cache or the database; `None` for an unknown key.
    pub async fn resolve(&self, key: &str) -> sqlx::Result<Option<Arc<Target>>> {
        if let Some((at, target)) = self.cache.lock().expect("cache lock").get(key) {
            if at.elapsed() < CACHE_TTL {
                return Ok(Some(target.clone()));
            }
        }
        let Some(row) = store::find_by_key(&self.db, key).await? else {
            return Ok(None);
        };
        let Ok(destination) = url::Url::parse(&row.destination_url) else {
            return Ok(None);
        };
        let target = Arc::new(Target {
            destination,
            allowed_domains: row
                .allowed_domains
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            tenant_id: row.tenant_id,
            link_id: row.link_id,
            partner_id: row.partner_id,
            campaign_id: row.campaign_id,
            click_param: row.click_param,
        });
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key.to_owned(), (Instant::now(), target.clone()));
        Ok(Some(target))
    }

    /// Drops every cached link, after a change to campaigns.
    pub fn forget_cached(&self) {
        self.cache.lock().expect("cache lock").clear();
    }

    /// Stores `click`; returns once it is committed.
    pub async fn record(&self, click: Click) -> Result<(), NotStored> {
        if self.recorder.submit(click).await {
            Ok(())
        } else {
            Err(NotStored)
        }
    }
}

/// `to` if it may be a deep link of `target`: an http(s) URL without credentials whose host is
/// the destination's host or one of the allowed domains (or a subdomain of one).
pub fn deep_link(target: &Target, to: &str) -> Option<url::Url> {
    let url = url::Url::parse(to).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let Some(url::Host::Domain(host)) = url.host() else {
        return None;
    };
    let host = host.trim_end_matches('.');
    let allowed = target
        .allowed_domains
        .iter()
        .map(String::as_str)
        .chain(target.destination.host_str())
        .any(|domain| {
            host == domain
                || host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.'))
        });
    allowed.then_some(url)
}

/// `url` with the click id as its `param` query parameter (replacing one already there).
pub fn with_click_id(mut url: url::Url, param: &str, click_id: &str) -> url::Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != param)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(param, click_id);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            tenant_id: "ten".to_owned(),
            link_id: "lnk".to_owned(),
            partner_id: "ptr".to_owned(),
            campaign_id: "cmp".to_owned(),
            destination: url::Url::parse("https://example.com/landing?utm=x").unwrap(),
            allowed_domains: vec!["shop.example.org".to_owned()],
            click_param: "click_id".to_owned(),
        }
    }

    #[test]
    fn deep_links_stay_on_allowed_domains() {
        let t = target();
        for ok in [
            "https://example.com/pricing",
            "https://shop.example.org/p/1?x=1",
            "http://eu.shop.example.org/",
            "https://EXAMPLE.com/",
        ] {
            assert!(deep_link(&t, ok).is_some(), "{ok}");
        }
        for bad in [
            "https://evil.com/",
            "//evil.com/",
            "https://example.com.evil.com/",
            "https://evilexample.com/",
            "https://example.com@evil.com/",
            "https://user:pw@example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://evil.com/?r=https://example.com",
            "https://127.0.0.1/",
            "ftp://example.com/",
            "/relative",
        ] {
            assert!(deep_link(&t, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_click_id_replaces_a_parameter_of_the_same_name() {
        let url = url::Url::parse("https://example.com/?a=1&click_id=old&b=2").unwrap();
        assert_eq!(
            with_click_id(url, "click_id", "clk_1").as_str(),
            "https://example.com/?a=1&b=2&click_id=clk_1"
        );
    }
}
