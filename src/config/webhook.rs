//! The webhook flags (issue 16), flattened into [`super::Config`]. Their
//! values are checked when weft starts (`events::webhook::Settings`), with
//! a start-up error that names the flag.

use std::path::PathBuf;

use serde::Serialize;

/// Attempts per event before it is recorded as failed: with the backoff
/// (0.5 s doubling, at most 60 s, full jitter) about a minute of a
/// receiver being down at most.
pub const DEFAULT_WEBHOOK_MAX_ATTEMPTS: u32 = 8;
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;

/// `WEFT_WEBHOOK_SECRET`, unless unset or empty. Never a flag: it would
/// show in `ps`.
fn webhook_secret_from_env() -> Option<String> {
    std::env::var("WEFT_WEBHOOK_SECRET").ok().filter(|k| !k.is_empty())
}

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct WebhookFlags {
    /// A URL that every event is POSTed to, signed (Standard Webhooks) with
    /// the secret of --webhook-secret-file (repeatable; comma-separated in
    /// the variable). More subscriptions can be made at run time with
    /// `POST /api/webhooks`.
    #[arg(long = "webhook", env = "WEFT_WEBHOOKS", value_delimiter = ',')]
    pub webhooks: Vec<String>,

    /// A file holding the secret --webhook URLs are signed with:
    /// `whsec_` and the base64 of 24 to 64 random bytes.
    #[arg(long, env = "WEFT_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// The secret itself, from the environment only.
    #[arg(skip = webhook_secret_from_env())]
    #[serde(skip)]
    pub webhook_secret: Option<String>,

    /// Attempts per event and subscription before the event is recorded
    /// as failed (GET /api/webhooks/{id}/failures) and delivery moves on.
    #[arg(long, env = "WEFT_WEBHOOK_MAX_ATTEMPTS", default_value_t = DEFAULT_WEBHOOK_MAX_ATTEMPTS)]
    pub webhook_max_attempts: u32,

    /// How long one attempt may take, connecting to the receiver's status,
    /// in milliseconds.
    #[arg(long, env = "WEFT_WEBHOOK_TIMEOUT_MS", default_value_t = DEFAULT_WEBHOOK_TIMEOUT_MS)]
    pub webhook_timeout_ms: u64,

    /// Let webhooks post to loopback, private (RFC 1918), link-local,
    /// carrier-grade NAT, unique-local and other non-public addresses.
    /// Off: a leaked admin key cannot make weft probe its own network.
    #[arg(long, env = "WEFT_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
}

/// How a `--webhook` URL is shown in the start-up summary: its scheme and
/// host only. Receivers often carry their secret in the URL itself (a
/// token in the query, or a path such as Slack's `/services/T…/B…/X…`),
/// and logs travel further than the configuration does.
pub(super) fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let tail = if tail.is_empty() || tail == "/" { tail } else { "/***" };
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_webhook_url_is_shown_without_what_may_be_its_secret() {
        assert_eq!(shown("https://hooks.example.com/"), "https://hooks.example.com/");
        assert_eq!(shown("https://hooks.example.com"), "https://hooks.example.com");
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            shown("http://user:pw@127.0.0.1:9000/h?token=abc"),
            "http://127.0.0.1:9000/***"
        );
        assert_eq!(shown("not a url"), "***");
    }
}
