//! HTTP proxies: which one applies (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, as
//! curl and Go read them) and the `CONNECT` tunnel the WebSocket goes through.
//!
//! HTTP requests go through ureq's own proxy support, given the proxy chosen here, so HTTP and
//! WebSocket traffic always take the same route.

use crate::error::{Error, Result, TransportError};
use crate::url::BaseUrl;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};

/// An HTTP proxy: `http://[user:password@]host[:port]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    /// As ureq takes it: `http://[user:password@]host:port`.
    pub(crate) url: String,
    /// Host as it goes in a `Host` header (IPv6 in brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `user:password`, for `Proxy-Authorization: Basic`.
    credentials: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credentials.
        write!(f, "Proxy({}:{})", self.host, self.port)
    }
}

impl Proxy {
    /// Parses a proxy URL. Only `http` proxies are supported (the scheme may be left out).
    pub(crate) fn parse(url: &str) -> Result<Proxy> {
        let bad = |why: &str| Error::Config(format!("invalid proxy URL {url:?}: {why}"));
        let trimmed = url.trim().trim_end_matches('/');
        let rest = match trimmed.split_once("://") {
            Some(("http" | "HTTP", rest)) => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "the scheme {scheme:?} is not supported; only http:// proxies are"
                )));
            }
            None => trimmed,
        };
        if rest.contains('/') {
            return Err(bad("expected http://[user:password@]host[:port]"));
        }
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => (Some(percent_decode(userinfo)), authority),
            None => (None, rest),
        };
        let (host, port) = split_host_port(authority, 80).ok_or_else(|| bad("bad host or port"))?;
        let userinfo = match rest.rsplit_once('@') {
            Some((userinfo, _)) => format!("{userinfo}@"),
            None => String::new(),
        };
        Ok(Proxy {
            url: format!("http://{userinfo}{host}:{port}"),
            host,
            port,
            credentials,
        })
    }

    /// The proxy the environment asks for, for requests to `base`: `https_proxy`/`HTTPS_PROXY`
    /// (or `http_proxy`/`HTTP_PROXY` for an `http` base), then `all_proxy`/`ALL_PROXY`, unless
    /// `no_proxy`/`NO_PROXY` excludes the host. Loopback hosts are never proxied (as in Go):
    /// a proxy elsewhere cannot reach this machine's loopback.
    pub(crate) fn from_env(
        base: &BaseUrl,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Proxy>> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
        };
        let scheme_vars: &[&str] = if base.tls {
            &["https_proxy", "HTTPS_PROXY"]
        } else {
            &["http_proxy", "HTTP_PROXY"]
        };
        let Some(url) = var(scheme_vars).or_else(|| var(&["all_proxy", "ALL_PROXY"])) else {
            return Ok(None);
        };
        if is_loopback(base.bare_host()) {
            return Ok(None);
        }
        if let Some(no_proxy) = var(&["no_proxy", "NO_PROXY"])
            && excluded(&no_proxy, base.bare_host(), base.port)
        {
            return Ok(None);
        }
        Proxy::parse(&url).map(Some)
    }

    /// `Basic <credentials>` for a `Proxy-Authorization` header, if the URL had credentials.
    pub(crate) fn authorization(&self) -> Option<String> {
        use base64::Engine as _;
        let credentials = self.credentials.as_ref()?;
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
    }

    /// Opens a tunnel to `host:port` through this proxy on `tcp` (already connected to the
    /// proxy, with read and write timeouts set): sends `CONNECT` and reads the answer's head.
    pub(crate) fn connect(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
        user_agent: &str,
    ) -> Result<()> {
        let target = format!("{host}:{port}");
        let mut request =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {user_agent}\r\n");
        if let Some(authorization) = self.authorization() {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        let context = format!(
            "connecting through the proxy {}:{} to {target}",
            self.host, self.port
        );
        tcp.write_all(request.as_bytes())
            .map_err(|e| TransportError::io(context.clone(), e))?;
        let head = read_head(tcp).map_err(|e| TransportError::io(context.clone(), e))?;
        let status = parse_status(&head).ok_or_else(|| {
            TransportError::new(
                io::ErrorKind::InvalidData,
                format!("{context}: the proxy's answer is not HTTP"),
                None,
            )
        })?;
        match status {
            200..=299 => Ok(()),
            407 => Err(TransportError::new(
                io::ErrorKind::PermissionDenied,
                format!("{context}: the proxy wants credentials (407)"),
                None,
            )
            .into()),
            other => Err(TransportError::new(
                io::ErrorKind::ConnectionRefused,
                format!("{context}: the proxy answered {other}"),
                None,
            )
            .into()),
        }
    }
}

/// Reads an HTTP response head, one byte at a time so nothing after it (the tunnel's first
/// bytes) is consumed; at most 16 KiB.
fn read_head(tcp: &mut TcpStream) -> io::Result<Vec<u8>> {
    const LIMIT: usize = 16 * 1024;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the proxy's answer has no end of headers within 16 KiB",
            ));
        }
        match tcp.read(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(head)
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// `host[:port]` (IPv6 in brackets) → (host with brackets kept, port).
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let (v6, tail) = after.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => default_port,
            None => return None,
        };
        (format!("[{v6}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    Some((host, port))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `NO_PROXY` excludes `host:port`. Entries are comma-separated: `*` (everything), a
/// host name (itself and its subdomains; a leading `.` is optional), an IP address, a CIDR
/// range (`10.0.0.0/8`), each optionally with `:port` to exclude only that port.
fn excluded(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        // A port only where it cannot be part of an IPv6 address.
        // A CIDR entry never parses as host:port (its `/` is in the way).
        let (pattern, entry_port) = split_host_port(&entry, 0).unwrap_or((entry.clone(), 0));
        if entry_port != 0 && entry_port != port {
            return false;
        }
        let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
        if let (Some(ip), Some((net, bits))) = (ip, pattern.split_once('/')) {
            return in_cidr(ip, net, bits);
        }
        if let (Some(ip), Ok(entry_ip)) = (ip, pattern.parse::<IpAddr>()) {
            return ip == entry_ip;
        }
        let domain = pattern.trim_start_matches('.');
        !domain.is_empty()
            && (host == domain
                || host
                    .strip_suffix(domain)
                    .is_some_and(|prefix| prefix.ends_with('.')))
    })
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn base(url: &str) -> BaseUrl {
        BaseUrl::parse(url).unwrap()
    }

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::parse("http://user:p%40ss@proxy.example:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.example", 3128));
        assert_eq!(p.credentials.as_deref(), Some("user:p@ss"));
        assert_eq!(p.url, "http://user:p%40ss@proxy.example:3128");
        assert_eq!(p.authorization().as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert_eq!(Proxy::parse("http://h:1").unwrap().authorization(), None);
        assert_eq!(format!("{p:?}"), "Proxy(proxy.example:3128)");
        let p = Proxy::parse("proxy.example").unwrap();
        assert_eq!((p.port, p.url.as_str()), (80, "http://proxy.example:80"));
        let p = Proxy::parse("http://[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("[::1]", 8080));
        let p = Proxy::parse("http://[::1]").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("[::1]", 80));
        // Percent-escapes in credentials; a bad or cut escape stays as it is.
        let p = Proxy::parse("http://%41%62:%zz%4@h:1").unwrap();
        assert_eq!(p.credentials.as_deref(), Some("Ab:%zz%4"));
        for bad in [
            "socks5://proxy:1080",
            "https://proxy:443",
            "http://proxy:99999",
            "http://proxy/path",
            "http://",
            "http://[::1]junk",
            "http://[::1",
            "http://[]:80",
            "http://:80",
        ] {
            assert!(matches!(Proxy::parse(bad), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn picks_the_variable_for_the_scheme() {
        let vars = [
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
            ("ALL_PROXY", "http://all:3"),
        ];
        let https = Proxy::from_env(&base("https://api.sprites.dev"), env(&vars)).unwrap();
        assert_eq!(https.unwrap().host, "secure");
        let http = Proxy::from_env(&base("http://api.example"), env(&vars)).unwrap();
        assert_eq!(http.unwrap().host, "plain");
        let all = Proxy::from_env(&base("https://api.sprites.dev"), env(&vars[2..])).unwrap();
        assert_eq!(all.unwrap().host, "all");
        // Lower case wins over upper case, as in curl.
        let both = [
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
        ];
        let p = Proxy::from_env(&base("https://x.example"), env(&both)).unwrap();
        assert_eq!(p.unwrap().host, "lower");
        let empty = [("HTTPS_PROXY", " ")];
        assert!(
            Proxy::from_env(&base("https://x.example"), env(&empty))
                .unwrap()
                .is_none()
        );
        assert!(
            Proxy::from_env(&base("https://x.example"), env(&[]))
                .unwrap()
                .is_none()
        );
        let socks = [("ALL_PROXY", "socks5://s:1")];
        assert!(Proxy::from_env(&base("https://x.example"), env(&socks)).is_err());
    }

    #[test]
    fn loopback_and_no_proxy_hosts_go_direct() {
        let vars = [
            ("HTTPS_PROXY", "http://proxy:1"),
            ("HTTP_PROXY", "http://proxy:1"),
            (
                "NO_PROXY",
                "internal.example, .corp.example,10.0.0.0/8,api.example:8443",
            ),
        ];
        for direct in [
            "http://127.0.0.1:7780",
            "http://localhost:1",
            "http://[::1]:9",
            "https://internal.example",
            "https://a.internal.example",
            "https://corp.example",
            "https://deep.sub.corp.example",
            "http://10.1.2.3",
            "https://api.example:8443",
        ] {
            assert_eq!(
                Proxy::from_env(&base(direct), env(&vars)).unwrap(),
                None,
                "{direct}"
            );
        }
        for proxied in [
            "https://api.sprites.dev",
            "https://notinternal.example",
            "http://11.1.2.3",
            "https://api.example",
        ] {
            assert!(
                Proxy::from_env(&base(proxied), env(&vars))
                    .unwrap()
                    .is_some(),
                "{proxied}"
            );
        }
        let everything = [("HTTPS_PROXY", "http://proxy:1"), ("no_proxy", "*")];
        assert!(
            Proxy::from_env(&base("https://api.sprites.dev"), env(&everything))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn cidr_and_ipv6_entries() {
        assert!(excluded("fd00::/8", "fd12::1", 443));
        assert!(!excluded("fd00::/8", "fe80::1", 443));
        assert!(excluded("[fd00::1]:443", "fd00::1", 443));
        assert!(!excluded("[fd00::1]:443", "fd00::1", 80));
        assert!(excluded("192.168.0.0/16", "192.168.7.7", 80));
        assert!(!excluded("192.168.0.0/33", "192.168.7.7", 80));
        assert!(excluded("0.0.0.0/0", "8.8.8.8", 80));
        assert!(
            !excluded("fd00::/129", "fd00::1", 80),
            "a bad prefix length matches nothing"
        );
        assert!(!excluded("10.0.0.0/x", "10.0.0.1", 80));
        assert!(
            !excluded("10.0.0.0/8", "fd00::1", 80),
            "families do not mix"
        );
        assert!(!excluded("", "a.example", 80));
        assert!(!excluded(".", "a.example", 80));
    }

    /// A one-shot proxy on loopback: records the request head, answers `answer`.
    fn answer_connect(answer: Vec<u8>) -> (u16, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let head = read_head(&mut stream).unwrap();
            stream.write_all(&answer).unwrap();
            String::from_utf8(head).unwrap()
        });
        (port, thread)
    }

    fn tunnel(port: u16, credentials: &str) -> Result<()> {
        let proxy = Proxy::parse(&format!("http://{credentials}127.0.0.1:{port}")).unwrap();
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        proxy.connect(&mut tcp, "api.example", 443, "test-agent")
    }

    #[test]
    fn connect_sends_the_target_and_credentials_and_reads_the_verdict() {
        let (port, seen) = answer_connect(b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec());
        tunnel(port, "u:p@").unwrap();
        let head = seen.join().unwrap();
        assert!(
            head.starts_with("CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{head}"
        );
        assert!(head.contains("User-Agent: test-agent\r\n"));

        let (port, seen) = answer_connect(b"HTTP/1.1 407 Who\r\n\r\n".to_vec());
        let err = tunnel(port, "").unwrap_err();
        assert_eq!(err.io_kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(!seen.join().unwrap().contains("Proxy-Authorization"));

        let (port, _) = answer_connect(b"HTTP/1.1 502 Bad Gateway\r\n\r\n".to_vec());
        let err = tunnel(port, "").unwrap_err();
        assert_eq!(err.io_kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(err.to_string().contains("502"), "{err}");

        let (port, _) = answer_connect(b"SSH-2.0-OpenSSH_9\r\n\r\n".to_vec());
        assert_eq!(
            tunnel(port, "").unwrap_err().io_kind(),
            io::ErrorKind::InvalidData
        );

        let (port, _) = answer_connect(b"HTTP/1.1 200 OK\r\n".to_vec());
        assert_eq!(
            tunnel(port, "").unwrap_err().io_kind(),
            io::ErrorKind::UnexpectedEof
        );

        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'x', 20_000));
        let (port, _) = answer_connect(endless);
        assert_eq!(
            tunnel(port, "").unwrap_err().io_kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(parse_status(b"HTTP/1.0 407 Proxy Auth\r\n\r\n"), Some(407));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 short\r\n\r\n"), None);
    }
}
