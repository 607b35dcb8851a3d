//! Webhook delivery (issue 16): signed POSTs of the outbox's events to
//! each subscription, at least once, in order, surviving restarts.
//!
//! - `sign`: Standard Webhooks secrets and signatures (pure).
//! - `target`: the URL rule and the addresses refused without
//!   `--webhook-allow-private` (pure, plus resolving).
//! - `client`: one POST: resolve, check, connect, TLS, status, deadline.
//! - `policy`: what a status means, and the backoff (pure).
//! - `subscription`: a subscription, its filter and its JSON view.
//! - `deliver`: one subscription's task: outbox → POSTs → cursor.
//! - this module: [`Webhooks`], which starts and stops the tasks, keeps
//!   the subscriptions (`--webhook` and the API's), and sets the feed's
//!   delivery floor (the lowest cursor) so pruning keeps what is not
//!   delivered yet.
//!
//! Cluster mode: one node delivers for every subscription, the one that
//! holds the lease (`DeliveryLease`, a Redis key renewed every
//! [`SYNC_EVERY`]); the others run no delivery task. A node that loses the
//! lease stops its tasks; the next holder resumes from the stored cursors,
//! so an event in flight at the handover may be sent twice (never lost).

mod client;
mod deliver;
mod policy;
pub mod sign;
mod subscription;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use client::Client;
pub use sign::Secret;
pub use subscription::{Subscription, SubscriptionView};
pub use target::WebhookUrl;

use super::Feed;
use crate::clock::now_ms;
use crate::config::WebhookFlags;
use crate::metrics::Metrics;
use crate::storage::{BoxFuture, DocStore, StoreError, WebhookFailure, WebhookWrite};

/// Cluster mode: how often the lease is renewed and the subscriptions
/// re-read from the store (another node may have added one).
pub const SYNC_EVERY: Duration = Duration::from_secs(2);
/// Failures `GET /api/webhooks/{id}/failures` shows at most.
pub const MAX_FAILURES_SHOWN: usize = 100;

/// Cluster mode: the right to deliver (see the module's doc).
pub trait DeliveryLease: Send + Sync + 'static {
    /// Takes or renews the lease; whether this node holds it now.
    fn hold(&self) -> BoxFuture<'_, bool>;
    /// Gives it up (shutdown), so another node takes over at once.
    fn release(&self) -> BoxFuture<'_, ()>;
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no webhook subscription '{0}'")]
    NotFound(String),
    #[error(
        "webhook subscription '{0}' comes from --webhook (or WEFT_WEBHOOKS): remove it there and restart weft; \
         only subscriptions made through the API can be deleted through it"
    )]
    Configured(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The flags, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_attempts: u32,
    pub timeout: Duration,
    pub allow_private: bool,
    /// `--webhook` URLs, each with the shared secret.
    pub configured: Vec<Subscription>,
}

impl Settings {
    /// Reads the secret (file or variable) and checks every value; each
    /// error names the flag to fix.
    pub fn from_flags(flags: &WebhookFlags) -> Result<Self, WebhookError> {
        let bad = |m: String| WebhookError::Config(m);
        if flags.webhook_max_attempts == 0 {
            return Err(bad("--webhook-max-attempts must be at least 1".into()));
        }
        if flags.webhook_timeout_ms == 0 {
            return Err(bad(
                "--webhook-timeout-ms must be at least 1: every attempt needs a bound".into(),
            ));
        }
        let secret_text = match (&flags.webhook_secret_file, &flags.webhook_secret) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("--webhook-secret-file {}: cannot read it: {e}", path.display())))?,
            ),
            (None, Some(text)) => Some(text.clone()),
            (None, None) => None,
        };
        let urls: Vec<&String> = flags.webhooks.iter().filter(|u| !u.trim().is_empty()).collect();
        let secret = match secret_text {
            Some(text) => Some(Secret::parse(&text).map_err(|e| {
                bad(format!(
                    "the webhook secret (--webhook-secret-file or WEFT_WEBHOOK_SECRET): {e}"
                ))
            })?),
            None if !urls.is_empty() => {
                return Err(bad(
                    "--webhook (or WEFT_WEBHOOKS) is set but no secret is: give one with --webhook-secret-file \
                     or WEFT_WEBHOOK_SECRET (`whsec_` and the base64 of 24 to 64 random bytes, e.g. \
                     echo \"whsec_$(openssl rand -base64 32)\")"
                        .into(),
                ))
            }
            None => None,
        };
        let mut configured: Vec<Subscription> = Vec::new();
        for url in urls {
            let url = WebhookUrl::parse(url).map_err(|e| bad(format!("--webhook {url}: {e}")))?;
            let sub = Subscription::configured(url, secret.clone().expect("checked above"));
            if !configured.iter().any(|s| s.id == sub.id) {
                configured.push(sub);
            }
        }
        Ok(Self {
            max_attempts: flags.webhook_max_attempts,
            timeout: Duration::from_millis(flags.webhook_timeout_ms),
            allow_private: flags.webhook_allow_private,
            configured,
        })
    }
}

/// What a new subscription asks for (`POST /api/webhooks`).
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub url: String,
    pub events: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub content: bool,
}

/// What every delivery task shares.
pub(crate) struct Shared {
    store: Arc<dyn DocStore>,
    feed: Feed,
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    subs: BTreeMap<String, Arc<Subscription>>,
    running: HashMap<String, CancellationToken>,
    cursors: HashMap<String, i64>,
}

impl Shared {
    /// A task moved its cursor: the floor may rise.
    fn cursor_moved(&self, id: &str, seq: i64) {
        let mut state = self.state.lock().unwrap();
        if state.subs.contains_key(id) {
            let at = state.cursors.entry(id.to_string()).or_insert(seq);
            *at = (*at).max(seq);
        }
        self.set_floor(&state);
    }

    /// Whether `id` is still a subscription (not deleted).
    fn subscribed(&self, id: &str) -> bool {
        self.state.lock().unwrap().subs.contains_key(id)
    }

    /// The lowest cursor of every subscription (none: no floor).
    fn set_floor(&self, state: &State) {
        let floor = state
            .subs
            .keys()
            .map(|id| state.cursors.get(id).copied().unwrap_or(0))
            .min()
            .unwrap_or(i64::MAX);
        self.feed.set_delivery_floor(floor);
    }
}

/// The webhook service: cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
    stop: CancellationToken,
    lease: Option<Arc<dyn DeliveryLease>>,
}

impl Webhooks {
    /// Loads the subscriptions and cursors, gives every subscription
    /// without a cursor one at the newest event (a new subscription gets
    /// what happens from now on), and starts delivering.
    pub async fn start(
        store: Arc<dyn DocStore>,
        feed: Feed,
        settings: Settings,
        metrics: Arc<Metrics>,
        lease: Option<Arc<dyn DeliveryLease>>,
    ) -> Result<Self, WebhookError> {
        for sub in &settings.configured {
            // A start-up check: a name that does not resolve yet is only
            // warned about (DNS may come later); a forbidden address stops.
            if let Err(e) = sub.url.resolve(settings.allow_private).await {
                if e.contains("--webhook-allow-private") {
                    return Err(WebhookError::Config(format!("--webhook {}: {e}", sub.url)));
                }
                warn!(url = %sub.url, error = %e, "--webhook: cannot reach it yet; delivery will keep trying");
            }
        }
        let shared = Arc::new(Shared {
            store,
            feed,
            client: Client::new(settings.allow_private),
            settings,
            metrics,
            state: Mutex::new(State::default()),
        });
        let service = Self {
            shared,
            stop: CancellationToken::new(),
            lease,
        };
        service.sync().await?;
        if !service.shared.state.lock().unwrap().subs.is_empty() {
            info!(
                subscriptions = service.shared.state.lock().unwrap().subs.len(),
                "webhooks: delivering"
            );
        }
        tokio::spawn(service.clone().supervise());
        Ok(service)
    }

    /// Reads the subscriptions and cursors from the store, gives new ones
    /// their first cursor, and (when this node delivers) starts and stops
    /// tasks to match.
    async fn sync(&self) -> Result<(), WebhookError> {
        let shared = &self.shared;
        let mut subs: BTreeMap<String, Arc<Subscription>> = BTreeMap::new();
        for sub in &shared.settings.configured {
            subs.insert(sub.id.clone(), Arc::new(sub.clone()));
        }
        for row in shared.store.webhooks().await? {
            match Subscription::from_stored(&row) {
                Ok(sub) => {
                    subs.insert(sub.id.clone(), Arc::new(sub));
                }
                Err(e) => warn!(webhook = %row.id, error = %e, "a stored webhook subscription is invalid; skipped"),
            }
        }
        let mut cursors: HashMap<String, i64> = shared.store.webhook_cursors().await?.into_iter().collect();
        let latest = *shared.feed.latest().borrow();
        for id in subs.keys() {
            if !cursors.contains_key(id) {
                shared
                    .store
                    .webhook_write(WebhookWrite::Cursor {
                        webhook_id: id.clone(),
                        seq: latest,
                    })
                    .await?;
                cursors.insert(id.clone(), latest);
            }
        }
        let mut state = shared.state.lock().unwrap();
        for (id, seq) in cursors {
            let at = state.cursors.entry(id).or_insert(seq);
            *at = (*at).max(seq);
        }
        state.subs = subs;
        shared.set_floor(&state);
        Ok(())
    }

    /// Starts the tasks of subscriptions not running; stops those of
    /// subscriptions gone (or all, when `deliver` is false).
    fn reconcile(&self, deliver: bool) {
        let mut state = self.shared.state.lock().unwrap();
        let state = &mut *state;
        state.running.retain(|id, token| {
            let keep = deliver && state.subs.contains_key(id) && !token.is_cancelled();
            if !keep {
                token.cancel();
            }
            keep
        });
        if !deliver {
            return;
        }
        for (id, sub) in &state.subs {
            if state.running.contains_key(id) {
                continue;
            }
            let token = self.stop.child_token();
            let cursor = state.cursors.get(id).copied().unwrap_or(0);
            tokio::spawn(deliver::run(self.shared.clone(), sub.clone(), cursor, token.clone()));
            state.running.insert(id.clone(), token);
        }
    }

    /// Without a lease: start the tasks once. With one: renew it and
    /// re-read the subscriptions every [`SYNC_EVERY`], delivering only
    /// while this node holds it.
    async fn supervise(self) {
        let Some(lease) = self.lease.clone() else {
            self.reconcile(true);
            return;
        };
        let mut held = false;
        loop {
            let now_held = lease.hold().await;
            if now_held != held {
                info!(
                    held = now_held,
                    "webhooks: delivery lease {}",
                    if now_held { "taken" } else { "lost" }
                );
                held = now_held;
            }
            if let Err(e) = self.sync().await {
                warn!(error = %e, "webhooks: cannot read the subscriptions");
            }
            self.reconcile(held);
            tokio::select! {
                () = tokio::time::sleep(SYNC_EVERY) => {}
                () = self.stop.cancelled() => {
                    if held {
                        lease.release().await;
                    }
                    return;
                }
            }
        }
    }

    /// Stops every delivery task (an attempt in flight is abandoned; its
    /// event is sent again after the restart).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(lease) = &self.lease {
            lease.release().await;
        }
    }

    /// `POST /api/webhooks`: checks, stores, and starts delivering from
    /// the newest event. Returns the view and the secret (shown once).
    pub async fn create(&self, req: NewSubscription) -> Result<(SubscriptionView, Secret), WebhookError> {
        let bad = WebhookError::BadRequest;
        let url = WebhookUrl::parse(&req.url).map_err(|e| bad(format!("url: {e}")))?;
        url.resolve(self.shared.settings.allow_private)
            .await
            .map_err(|e| bad(format!("url: {e}")))?;
        let events = req
            .events
            .as_deref()
            .map(Subscription::parse_events)
            .transpose()
            .map_err(|e| bad(format!("events: {e}")))?;
        let prefix = Subscription::parse_prefix(req.prefix).map_err(bad)?;
        let secret = Secret::generate();
        let sub = Subscription {
            id: Subscription::new_id(),
            url,
            secret: secret.clone(),
            events,
            prefix,
            content: req.content,
            configured: false,
            created_ms: Some(now_ms()),
        };
        let store = &self.shared.store;
        store.webhook_write(WebhookWrite::Add(sub.to_stored())).await?;
        let cursor = *self.shared.feed.latest().borrow();
        store
            .webhook_write(WebhookWrite::Cursor {
                webhook_id: sub.id.clone(),
                seq: cursor,
            })
            .await?;
        info!(webhook = %sub.id, url = %sub.url, "webhook subscription made");
        let view = sub.view(Some(cursor));
        {
            let mut state = self.shared.state.lock().unwrap();
            state.cursors.insert(sub.id.clone(), cursor);
            state.subs.insert(sub.id.clone(), Arc::new(sub));
            self.shared.set_floor(&state);
        }
        if self.lease.is_none() {
            self.reconcile(true);
        }
        Ok((view, secret))
    }

    /// Every subscription, configured ones first.
    pub fn list(&self) -> Vec<SubscriptionView> {
        let state = self.shared.state.lock().unwrap();
        let mut views: Vec<SubscriptionView> = state
            .subs
            .values()
            .map(|s| s.view(state.cursors.get(&s.id).copied()))
            .collect();
        views.sort_by_key(|v| (!v.configured, v.created_ms, v.id.clone()));
        views
    }

    pub fn get(&self, id: &str) -> Result<SubscriptionView, WebhookError> {
        let state = self.shared.state.lock().unwrap();
        let sub = state
            .subs
            .get(id)
            .ok_or_else(|| WebhookError::NotFound(id.to_string()))?;
        Ok(sub.view(state.cursors.get(id).copied()))
    }

    /// `DELETE /api/webhooks/{id}`: stops its task and forgets it, its
    /// cursor and its failures.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        {
            let state = self.shared.state.lock().unwrap();
            match state.subs.get(id) {
                Some(sub) if sub.configured => return Err(WebhookError::Configured(id.to_string())),
                Some(_) => {}
                None => return Err(WebhookError::NotFound(id.to_string())),
            }
        }
        self.shared
            .store
            .webhook_write(WebhookWrite::Delete { id: id.to_string() })
            .await?;
        {
            let mut state = self.shared.state.lock().unwrap();
            state.subs.remove(id);
            state.cursors.remove(id);
            if let Some(token) = state.running.remove(id) {
                token.cancel();
            }
            self.shared.set_floor(&state);
        }
        self.shared.metrics.webhooks.forget(id);
        info!(webhook = %id, "webhook subscription deleted");
        Ok(())
    }

    /// `GET /api/webhooks/{id}/failures`: newest first.
    pub async fn failures(&self, id: &str) -> Result<Vec<WebhookFailure>, WebhookError> {
        self.get(id)?;
        Ok(self.shared.store.webhook_failures(id, MAX_FAILURES_SHOWN).await?)
    }
}
