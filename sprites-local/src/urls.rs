//! Sprite URLs (PROTOCOL.md §5.1 `url`, §14): every sprite is reachable over HTTP at
//! `http://<name>.localhost:<port>` (browsers resolve `*.localhost` to loopback), on the
//! API's own listener. A request whose `Host` names a sprite this way is proxied to port
//! [`SPRITE_HTTP_PORT`] (or the `http_port` of a running service) inside the sprite (as the sprite sees it: its own loopback in the
//! sandbox runtime), waking the sprite first; WebSocket upgrades pass through (after the
//! head, bytes are relayed both ways as they are).
//!
//! Who may: `url_settings.auth` `sprite` (the default) needs the API token as
//! `Authorization: Bearer …`; `public` needs nothing. That decision is made in
//! `api::authenticate` from the head alone, and a request marked for a sprite's URL never
//! reaches an API route. The token itself is never passed on to the sprite.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{sprite_not_found, Reply, WebSocketSession};
use crate::net::http::{RequestHead, Response};
use crate::state::{Conn, State};
use crate::sys;

/// The port inside a sprite its URL reaches (the platform's, §14).
pub const SPRITE_HTTP_PORT: u16 = 8080;
/// Longest the connect to the sprite's server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A proxied connection with no byte either way for this long is closed.
const IDLE: Duration = Duration::from_secs(300);
/// Longest a write to either side may block (a peer that stopped reading).
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Relay buffer, per direction.
const BUF: usize = 64 * 1024;

/// The URL of sprite `name` on this server.
pub fn sprite_url(state: &State, name: &str) -> String {
    format!("http://{name}.localhost:{}", state.url_port)
}

/// The sprite a request is for, if its `Host` is `<name>.localhost` (any port, any case,
/// a trailing dot allowed). `<name>` is returned as given (lowercased); an invalid or
/// unknown one is answered 404 by [`proxy`] (or 401 without the token).
pub fn target(head: &RequestHead) -> Option<String> {
    let host = head.header("host")?.trim().to_ascii_lowercase();
    // Strip a port; a bracketed IPv6 literal is never a sprite's host.
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host.as_str(),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let name = host.strip_suffix(".localhost")?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Whether sprite `name`'s URL is public (`url_settings.auth` = `public`).
pub fn is_public(state: &State, name: &str) -> bool {
    state
        .store
        .get(name)
        .is_some_and(|r| r.url_settings.auth == "public")
}

/// Serves a request for sprite `name`'s URL: wakes the sprite, connects to its HTTP port,
/// and relays. **404** for an unknown sprite, **502** when nothing answers inside.
pub fn proxy(state: &Arc<State>, name: &str, req: &RequestHead) -> Reply {
    if !crate::store::valid_name(name) || !state.store.contains(name) {
        return sprite_not_found(name).into();
    }
    if let Err(e) = state.lifecycle.wake(state, name) {
        return bad_gateway(&format!("sprite {name:?} could not be woken: {e}")).into();
    }
    let activity = state.lifecycle.hold(state, name);
    // A running service with an `http_port` takes the place of port 8080 (§11).
    let port = crate::services::running(state, name)
        .into_iter()
        .find_map(|(_, _, http_port)| http_port)
        .unwrap_or(SPRITE_HTTP_PORT);
    let dir = state.store.sprite_dir(name);
    let upstream = match state
        .runtime
        .connect_tcp(&dir, "localhost", port, CONNECT_TIMEOUT)
    {
        Ok(s) => s,
        Err(e) => {
            return bad_gateway(&format!(
                "nothing answers on port {port} inside sprite {name:?}: {e}"
            ))
            .into()
        }
    };
    let head = forwarded_head(req, &state.token);
    Reply::WebSocket(Box::new(Relay {
        upstream,
        head,
        _activity: activity,
    }))
}

fn bad_gateway(message: &str) -> Response {
    Response::error(502, "sprite_unreachable", message)
}

/// The request head as it goes to the sprite: the same request line and headers, minus
/// the API token, and — unless it is an upgrade — with `Connection: close`, so the
/// exchange is one request (the next one on the client's connection is authenticated and
/// routed again).
fn forwarded_head(req: &RequestHead, token: &str) -> Vec<u8> {
    let upgrade = req.header("upgrade").is_some();
    let mut out = format!("{} {}", req.method, req.path);
    if !req.query.is_empty() {
        out.push('?');
        out.push_str(&req.query);
    }
    out.push_str(&format!(" HTTP/1.{}\r\n", req.minor_version));
    for (k, v) in &req.headers {
        let hop = matches!(k.as_str(), "connection" | "keep-alive" | "proxy-connection");
        if (hop && !upgrade)
            || (k == "authorization" && crate::net::auth::is_authorized(Some(v), token))
        {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !upgrade {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A proxied connection: the client's connection and the sprite's server, relayed.
struct Relay {
    upstream: TcpStream,
    head: Vec<u8>,
    /// Keeps the sprite `running` while the connection is open.
    _activity: crate::lifecycle::Activity,
}

impl WebSocketSession for Relay {
    fn run(self: Box<Self>, _state: Arc<State>, conn: Arc<Conn>, leftover: Vec<u8>) {
        let client = conn.stream();
        let up = &self.upstream;
        let _ = client.set_write_timeout(Some(WRITE_STALL));
        let _ = up.set_write_timeout(Some(WRITE_STALL));
        let mut w = up;
        if w.write_all(&self.head).is_err() || w.write_all(&leftover).is_err() {
            return;
        }
        relay(client, up);
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// Copies bytes both ways until the sprite's side ends (or either side fails, or nothing
/// moved for [`IDLE`]). The client's end of input is passed on as a half-close.
fn relay(client: &TcpStream, up: &TcpStream) {
    let mut buf = vec![0u8; BUF];
    let mut client_open = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: if client_open { client.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: up.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        match sys::fd::poll(&mut fds, IDLE.as_millis() as libc::c_int) {
            Ok(0) => return, // idle
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if fds[1].revents != 0 {
            match copy_once(up, client, &mut buf) {
                Ok(true) => {}
                // The sprite's server is done (or failed): so is the exchange.
                Ok(false) | Err(_) => return,
            }
        }
        if client_open && fds[0].revents != 0 {
            match copy_once(client, up, &mut buf) {
                Ok(true) => {}
                Ok(false) => {
                    client_open = false;
                    let _ = up.shutdown(Shutdown::Write);
                }
                Err(_) => return,
            }
        }
    }
}

/// One read from `from`, all of it written to `to`; false at end of input.
fn copy_once(mut from: &TcpStream, mut to: &TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let n = loop {
        match from.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    if n == 0 {
        return Ok(false);
    }
    to.write_all(&buf[..n])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(host: Option<&str>) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            path: "/a%20b".into(),
            query: "x=1".into(),
            minor_version: 1,
            headers: host
                .map(|h| vec![("host".to_owned(), h.to_owned())])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn hosts_that_name_a_sprite() {
        for (host, want) in [
            ("web.localhost:8080", Some("web")),
            ("WEB.LocalHost", Some("web")),
            ("web.localhost.:1", Some("web")),
            ("a.b.localhost:1", Some("a.b")),
            ("localhost:7780", None),
            ("127.0.0.1:7780", None),
            ("[::1]:7780", None),
            (".localhost", None),
            ("web.localhostx", None),
            ("web.example.com", None),
        ] {
            assert_eq!(target(&head(Some(host))).as_deref(), want, "{host}");
        }
        assert_eq!(target(&head(None)), None);
    }

    #[test]
    fn the_forwarded_head_drops_the_token_and_closes() {
        let mut h = head(Some("web.localhost:1"));
        h.headers
            .push(("authorization".into(), "Bearer secret".into()));
        h.headers.push(("connection".into(), "keep-alive".into()));
        h.headers.push(("x-app".into(), "1".into()));
        let out = String::from_utf8(forwarded_head(&h, "secret")).unwrap();
        assert_eq!(
            out,
            "GET /a%20b?x=1 HTTP/1.1\r\nhost: web.localhost:1\r\nx-app: 1\r\nconnection: close\r\n\r\n"
        );
        // Someone else's credentials are the app's business.
        h.headers[1].1 = "Bearer other".into();
        let out = String::from_utf8(forwarded_head(&h, "secret")).unwrap();
        assert!(out.contains("authorization: Bearer other\r\n"), "{out}");
        // An upgrade keeps its Connection header.
        h.headers.push(("upgrade".into(), "websocket".into()));
        let out = String::from_utf8(forwarded_head(&h, "secret")).unwrap();
        assert!(out.contains("connection: keep-alive\r\n") && !out.contains("close"));
    }
}
