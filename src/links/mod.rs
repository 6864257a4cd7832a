//! Share links and the click router, `GET /r/{link_key}`.
//!
//! The router is the hottest path of the hub, so it neither reads nor writes the database per
//! click on its own:
//!
//! - Link lookups are cached in memory for [`CACHE_TTL`] (a change made through this node is seen
//!   at once; other nodes see it within the TTL). Unknown keys are not cached.
//! - Clicks are buffered and group-committed (ADR 7): a request hands its click to one recorder
//!   task and answers; the recorder writes every click waiting (up to [`MAX_BATCH`]) in one
//!   transaction, and while one batch commits the next gathers. A batch that fails is retried
//!   until it commits, never dropped. The buffer holds at most [`BUFFER`] clicks; beyond that a
//!   request waits for room (up to [`ROOM_WAIT`], then 503), so a slow database slows the router
//!   instead of growing memory. A clean shutdown stores every buffered click before the pool
//!   closes; a crash loses the clicks answered since the last commit (milliseconds' worth).
//! - A request that names a click (events, identities) first waits for [`Links::flush`], so a
//!   click answered by this node is in the database before it is looked up.
//! - Whether a click belongs to a revoked partner is decided by the insert's transaction, from
//!   the partner's status at that moment, not from the cache. Revoking or reinstating a partner
//!   first waits for [`Links::flush`], so a click this node answered before the change carries
//!   the status it was made under.

pub mod routes;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::db::Db;

pub use store::Click;

/// How long a cached link is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Cached links kept at most (the cache starts over when full).
const CACHE_CAPACITY: usize = 100_000;
/// Clicks written in one transaction at most.
pub const MAX_BATCH: usize = 512;
/// Clicks answered but not yet handed to a transaction, at most.
pub const BUFFER: usize = 8 * MAX_BATCH;
/// How long a request waits for room in a full buffer before it answers 503.
pub const ROOM_WAIT: Duration = Duration::from_secs(2);
/// Pause before a failed batch is written again, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// The destination with its click parameter, split where the click id goes (see
    /// [`Target::location`]).
    location: (String, String),
}

impl Target {
    /// The router's view of a stored link; `None` when its destination is not a URL.
    pub fn from_row(row: store::LinkRow) -> Option<Self> {
        let destination = url::Url::parse(&row.destination_url).ok()?;
        // A stand-in click id made of letters, as a click id is, so it is encoded the same.
        const MARK: &str = "CLICKID";
        let marked = with_click_id(destination.clone(), &row.click_param, MARK);
        // The click parameter ends the query, which only the fragment may follow.
        let end = marked.as_str().len() - marked.fragment().map_or(0, |f| f.len() + 1);
        let (head, tail) = marked.as_str().split_at(end);
        let location = (head[..end - MARK.len()].to_owned(), tail.to_owned());
        Some(Target {
            tenant_id: row.tenant_id,
            link_id: row.link_id,
            partner_id: row.partner_id,
            campaign_id: row.campaign_id,
            destination,
            allowed_domains: row
                .allowed_domains
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            click_param: row.click_param,
            location,
        })
    }

    /// Where a click without a deep link goes: the destination with `click_id` as its click
    /// parameter, as [`with_click_id`] makes it, without parsing the destination again.
    pub fn location(&self, click_id: &str) -> String {
        let (head, tail) = &self.location;
        [head, click_id, tail].concat()
    }
}

/// What the recorder receives, in order: clicks, and flush requests answered once every click
/// before them has committed.
enum Entry {
    Click(Click),
    Flush(oneshot::Sender<()>),
}

/// The click router's cache and its connection to the recorder task.
pub struct Links {
    db: Db,
    cache: Mutex<HashMap<String, (Instant, Arc<Target>)>>,
    buffer: mpsc::Sender<Entry>,
    stop: watch::Sender<bool>,
    recorder: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the click could not be accepted: the click buffer stayed full or is closed")]
pub struct NotAccepted;

impl Links {
    /// Starts the recorder task on `db`.
    pub fn start(db: Db) -> Arc<Links> {
        let (buffer, entries) = mpsc::channel(BUFFER);
        let (stop, stopping) = watch::channel(false);
        let recorder = tokio::spawn(record(db.clone(), entries, stopping));
        Arc::new(Links {
            db,
            cache: Mutex::new(HashMap::new()),
            buffer,
            stop,
            recorder: Mutex::new(Some(recorder)),
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
        let Some(target) = Target::from_row(row).map(Arc::new) else {
            return Ok(None);
        };
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

    /// Buffers `click` for the recorder; from here on it is stored, whatever happens to the
    /// database, unless the process dies before the recorder commits it.
    pub async fn record(&self, click: Click) -> Result<(), NotAccepted> {
        // Room is the rule; only a full buffer pays for a timer.
        let click = match self.buffer.try_send(Entry::Click(click)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(click)) => click,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(NotAccepted),
        };
        self.buffer
            .send_timeout(click, ROOM_WAIT)
            .await
            .map_err(|_| NotAccepted)
    }

    /// Returns once every click buffered before this call has committed.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.buffer.send(Entry::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Stops taking clicks and returns once every buffered one is stored (call it after the
    /// HTTP server has finished its requests).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let recorder = self.recorder.lock().expect("recorder lock").take();
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
    }
}

/// The recorder task: writes buffered clicks batch by batch until the buffer is closed and empty.
async fn record(db: Db, mut entries: mpsc::Receiver<Entry>, mut stopping: watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            received = entries.recv_many(&mut batch, MAX_BATCH) => received,
            _ = stopping.changed() => {
                // No more clicks come in; the ones buffered are still received.
                entries.close();
                entries.recv_many(&mut batch, MAX_BATCH).await
            }
        };
        if received == 0 {
            return;
        }
        let mut clicks = Vec::with_capacity(batch.len());
        let mut waiting = Vec::new();
        for entry in batch.drain(..) {
            match entry {
                Entry::Click(click) => clicks.push(click),
                Entry::Flush(done) => waiting.push(done),
            }
        }
        let mut pause = RETRY_FIRST;
        while let Err(err) = store::insert_clicks(&db, &clicks).await {
            tracing::error!(error = %err, clicks = clicks.len(), retry_in = ?pause,
                "storing clicks failed; they stay buffered");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
        for done in waiting {
            let _ = done.send(());
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
    if url.query_pairs().all(|(name, _)| name != param) {
        url.query_pairs_mut().append_pair(param, click_id);
        return url;
    }
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

    fn target_to(destination: &str, click_param: &str) -> Target {
        Target::from_row(store::LinkRow {
            tenant_id: "ten".to_owned(),
            link_id: "lnk".to_owned(),
            partner_id: "ptr".to_owned(),
            campaign_id: "cmp".to_owned(),
            destination_url: destination.to_owned(),
            allowed_domains: "shop.example.org".to_owned(),
            click_param: click_param.to_owned(),
        })
        .unwrap()
    }

    fn target() -> Target {
        target_to("https://example.com/landing?utm=x", "click_id")
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
    fn a_location_is_the_destination_with_the_click_id() {
        for (destination, param) in [
            ("https://example.com/landing?utm=x", "click_id"),
            ("https://example.com", "click_id"),
            ("https://example.com/p?a=1&click_id=old&b=2#top", "click_id"),
            ("https://example.com/p#section?x=CLICKID", "c id&="),
            ("https://example.com/CLICKID?q=CLICKID", "CLICKID"),
        ] {
            let target = target_to(destination, param);
            let expected =
                with_click_id(url::Url::parse(destination).unwrap(), param, "clk_01JD4X");
            assert_eq!(
                target.location("clk_01JD4X"),
                expected.as_str(),
                "{destination}"
            );
        }
    }

    #[test]
    fn the_click_id_replaces_a_parameter_of_the_same_name() {
        let url = url::Url::parse("https://example.com/?a=1&click_id=old&b=2").unwrap();
        assert_eq!(
            with_click_id(url, "click_id", "clk_1").as_str(),
            "https://example.com/?a=1&b=2&click_id=clk_1"
        );
        let url = url::Url::parse("https://example.com/p?a=1").unwrap();
        assert_eq!(
            with_click_id(url, "click_id", "clk_1").as_str(),
            "https://example.com/p?a=1&click_id=clk_1"
        );
    }
}
