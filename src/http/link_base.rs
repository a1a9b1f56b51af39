//! The absolute base URL that the Invitations API's HAL `href`s start with (the seed types
//! `link.href` as `format: uri`, and every example is absolute).
//!
//! Rules, in order:
//! - `public_url`, when configured, is the base of every link;
//! - else the request's own origin: behind a trusted proxy (`invitations.trust_forwarded_for`)
//!   the last `X-Forwarded-Proto` and `X-Forwarded-Host` entries, which are the proxy's; else
//!   `http://` and the `Host` header;
//! - a host that is not a plain `host[:port]` authority falls back to the address the service
//!   listens on, so a request can never put a path, user info or spaces into a link.
//!
//! Links go back only to the client that sent the request. The invitation email's accept link
//! never takes a request's origin (a customer could name any host); it uses the configured base.

use super::invitations::forwarded::proxy_added_entry;
use axum::http::HeaderMap;
use axum::http::uri::Authority;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct LinkBase {
    configured: Option<Arc<str>>,
    trust_proxy: bool,
    /// `http://` and the listening address, for a request without a usable host.
    fallback: Arc<str>,
}

impl LinkBase {
    pub fn new(public_url: Option<&str>, trust_proxy: bool, fallback: &str) -> Self {
        let base = |url: &str| Arc::from(url.trim_end_matches('/'));
        Self {
            configured: public_url.map(base),
            trust_proxy,
            fallback: base(fallback),
        }
    }

    /// The base (no trailing slash) for a request with these headers.
    pub fn of(&self, headers: &HeaderMap) -> Arc<str> {
        if let Some(configured) = &self.configured {
            return configured.clone();
        }
        let forwarded = |name: &str| {
            self.trust_proxy
                .then(|| proxy_added_entry(headers, name))
                .flatten()
        };
        let scheme = match forwarded("x-forwarded-proto") {
            Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        let host = forwarded("x-forwarded-host")
            .or_else(|| headers.get("host").and_then(|v| v.to_str().ok()))
            .filter(|host| is_plain_authority(host));
        match host {
            Some(host) => Arc::from(format!("{scheme}://{host}")),
            None => self.fallback.clone(),
        }
    }
}

/// `host` or `host:port`, nothing more: no user info, path, query or white space.
fn is_plain_authority(value: &str) -> bool {
    !value.contains('@')
        && value
            .parse::<Authority>()
            .is_ok_and(|authority| authority.as_str() == value && !authority.host().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const LISTENING: &str = "http://127.0.0.1:8080";

    #[test]
    fn a_configured_public_url_wins() {
        let base = LinkBase::new(Some("https://bank.example/"), true, LISTENING);
        let sent = headers(&[("host", "other.example"), ("x-forwarded-host", "x.example")]);
        assert_eq!(&*base.of(&sent), "https://bank.example");
    }

    #[test]
    fn without_one_the_request_names_the_origin() {
        let direct = LinkBase::new(None, false, LISTENING);
        let sent = headers(&[
            ("host", "api.bank.example:8443"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        assert_eq!(&*direct.of(&sent), "http://api.bank.example:8443");
        let proxied = LinkBase::new(None, true, LISTENING);
        assert_eq!(&*proxied.of(&sent), "https://evil.example");
        let appended = headers(&[
            ("host", "internal:8080"),
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "client.example, bank.example"),
        ]);
        assert_eq!(&*proxied.of(&appended), "https://bank.example");
        let host_only = headers(&[("host", "internal:8080")]);
        assert_eq!(&*proxied.of(&host_only), "http://internal:8080");
    }

    #[test]
    fn hosts_that_are_not_plain_authorities_fall_back_to_the_listening_address() {
        let base = LinkBase::new(None, true, LISTENING);
        for host in ["", "user@bank.example", "bank.example/path", "a b", ":80"] {
            assert_eq!(
                &*base.of(&headers(&[("host", host)])),
                LISTENING,
                "{host:?}"
            );
        }
        assert_eq!(&*base.of(&HeaderMap::new()), LISTENING);
    }

    proptest! {
        #[test]
        fn every_base_is_an_absolute_http_url(host in "\\PC{0,30}", proto in "\\PC{0,8}") {
            let Ok(host_value) = HeaderValue::from_str(&host) else { return Ok(()) };
            let Ok(proto_value) = HeaderValue::from_str(&proto) else { return Ok(()) };
            let mut sent = HeaderMap::new();
            sent.insert("x-forwarded-host", host_value.clone());
            sent.insert("host", host_value);
            sent.insert("x-forwarded-proto", proto_value);
            let base = LinkBase::new(None, true, LISTENING).of(&sent);
            let uri: axum::http::Uri = format!("{base}/invitations/").parse().unwrap();
            prop_assert!(matches!(uri.scheme_str(), Some("http" | "https")), "{base}");
            prop_assert!(uri.host().is_some_and(|h| !h.is_empty()), "{base}");
        }
    }
}
