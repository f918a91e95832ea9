//! The base URL, percent-encoding and query strings: the small part of URL handling the client needs.

use crate::error::{Error, Result};

/// A parsed `http(s)://host[:port][/prefix]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// The URL as given, minus trailing slashes.
    full: String,
    pub(crate) tls: bool,
    /// Host as it goes in a `Host` header and TLS SNI: `[::1]` keeps its brackets here.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl BaseUrl {
    pub(crate) fn parse(url: &str) -> Result<BaseUrl> {
        let bad = |why: &str| Error::Config(format!("invalid base URL {url:?}: {why}"));
        let trimmed = url.trim().trim_end_matches('/');
        let (tls, rest) = if let Some(rest) = trimmed.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = trimmed.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("the scheme must be http or https"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') || rest.contains(['?', '#']) {
            return Err(bad("expected http(s)://host[:port][/prefix]"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (v6, tail) = after
                .split_once(']')
                .ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if tail.is_empty() => default_port,
                None => return Err(bad("junk after IPv6 address")),
            };
            (format!("[{v6}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("empty host"));
        }
        Ok(BaseUrl {
            full: trimmed.to_owned(),
            tls,
            host,
            port,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.full
    }

    /// The WebSocket URL for a path: `http`→`ws`, `https`→`wss`.
    pub(crate) fn ws_url(&self, path_and_query: &str) -> String {
        let rest = self
            .full
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&self.full);
        format!(
            "{}://{}{}",
            if self.tls { "wss" } else { "ws" },
            rest,
            path_and_query
        )
    }

    /// Host without IPv6 brackets, for DNS resolution and TLS server names.
    pub(crate) fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so names, paths and argv
/// elements survive as one path segment or query value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 15)]));
            }
        }
    }
    out
}

/// Builds `?k=v&k=v` with every key and value encoded; repeated keys are kept in order.
#[derive(Debug, Default)]
pub(crate) struct Query {
    buf: String,
}

impl Query {
    pub(crate) fn new() -> Query {
        Query::default()
    }

    pub(crate) fn push(&mut self, key: &str, value: &str) -> &mut Self {
        self.buf.push(if self.buf.is_empty() { '?' } else { '&' });
        self.buf.push_str(&encode(key));
        self.buf.push('=');
        self.buf.push_str(&encode(value));
        self
    }

    pub(crate) fn push_opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.push(key, value);
        }
        self
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = BaseUrl::parse("https://api.sprites.dev/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.as_str()),
            (true, "api.sprites.dev", 443, "https://api.sprites.dev")
        );
        let u = BaseUrl::parse("http://127.0.0.1:7780").unwrap();
        assert_eq!((u.tls, u.port), (false, 7780));
        assert_eq!(u.ws_url("/v1/x"), "ws://127.0.0.1:7780/v1/x");
        let u = BaseUrl::parse("http://[::1]:9/prefix").unwrap();
        assert_eq!(
            (u.host.as_str(), u.bare_host(), u.port),
            ("[::1]", "::1", 9)
        );
        assert_eq!(u.ws_url("/v1"), "ws://[::1]:9/prefix/v1");
    }

    #[test]
    fn rejects_bad_base_urls() {
        for bad in [
            "ftp://x",
            "api.sprites.dev",
            "http://",
            "http://h:99999",
            "http://u@h",
            "http://h?q",
            "http://[::1",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn encodes_reserved_and_unicode() {
        assert_eq!(encode("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("safe-._~"), "safe-._~");
        let mut q = Query::new();
        q.push("cmd", "sh").push("cmd", "-c").push_opt("dir", None);
        assert_eq!(q.as_str(), "?cmd=sh&cmd=-c");
    }
}
