//! Lifecycle and sprite-URL figures (PROTOCOL.md §14), measured before the main report and
//! read by it (`figures()`):
//!
//! - `create_to_running_ms`: `POST /v1/sprites` until the watch stream (§5.5) says the new
//!   sprite is `running` — the boot, with no command (p50 of 5).
//! - `url_overhead_us`: what going through the sprite's URL adds to an HTTP request: the p50
//!   round trip of `GET /` (a new connection each, as the proxy makes one exchange per
//!   connection) to a `python3 -m http.server` service in a sprite **through its URL**, minus
//!   the p50 round trip of the same request sent **directly** to that same server on
//!   loopback. Only the host runtime lets the test reach the in-sprite server directly (a
//!   sandboxed sprite's loopback is its own), so this is measured on a host-runtime server —
//!   the main one, or the one the report starts beside a sandbox. With a sandbox, the URL
//!   round trip through it is reported as well (`sandbox_url_rtt_p50_us`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sprites::{Client, ServiceSpec, SpriteUpdate, UrlSettings, WatchOptions};

use super::{Endpoint, percentiles};

/// What [`measure`] found.
pub struct Figures {
    pub create_to_running_ms: f64,
    /// Through a host-runtime sprite's URL, and directly (same server).
    pub url_rtt_p50_us: Option<f64>,
    pub direct_rtt_p50_us: Option<f64>,
    /// Through a sandboxed sprite's URL.
    pub sandbox_url_rtt_p50_us: Option<f64>,
}

static FIGURES: OnceLock<Figures> = OnceLock::new();

/// The figures, once [`measure`] ran.
pub fn figures() -> Option<&'static Figures> {
    FIGURES.get()
}

const URL_SAMPLES: usize = 300;

/// Measures everything; `main` is the server the report runs against, `host` the
/// host-runtime one beside a sandbox (if any). Failures are reported and leave gaps.
pub fn measure(
    main: (&Client, Option<&Endpoint>, &str),
    host: Option<(&Client, Option<&Endpoint>)>,
    name: &str,
) {
    let (client, endpoint, runtime) = main;
    let create_to_running_ms = match create_to_running_ms(client, name) {
        Ok(ms) => ms,
        Err(e) => {
            eprintln!("bench: create -> running skipped: {e}");
            f64::NAN
        }
    };
    let host_side = match (runtime, endpoint) {
        ("host", Some(ep)) => Some((client, ep)),
        _ => host.and_then(|(c, ep)| ep.map(|ep| (c, ep))),
    };
    let (url, direct) = match host_side.map(|(c, ep)| url_vs_direct(c, ep, &format!("{name}-u"))) {
        Some(Ok((u, d))) => (Some(u), Some(d)),
        Some(Err(e)) => {
            eprintln!("bench: URL overhead skipped: {e}");
            (None, None)
        }
        None => (None, None),
    };
    let sandbox_url = match (runtime, endpoint) {
        ("sandbox", Some(ep)) => match url_rtt(client, ep, &format!("{name}-su")) {
            Ok(u) => Some(u),
            Err(e) => {
                eprintln!("bench: sandbox URL round trip skipped: {e}");
                None
            }
        },
        _ => None,
    };
    let _ = FIGURES.set(Figures {
        create_to_running_ms,
        url_rtt_p50_us: url,
        direct_rtt_p50_us: direct,
        sandbox_url_rtt_p50_us: sandbox_url,
    });
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn create_to_running_ms(client: &Client, name: &str) -> Res<f64> {
    let mut samples = Vec::new();
    for i in 0..5 {
        let name = format!("{name}-run{i}");
        let watch = client.watch_sprites(&WatchOptions::new().prefix(&name))?;
        let started = Instant::now();
        let sprite = client.create_sprite(&name)?;
        let mut took = None;
        for event in watch {
            let event = event?;
            if event.name.as_deref() == Some(name.as_str())
                && event.status_text.as_deref() == Some("running")
            {
                took = Some(started.elapsed().as_secs_f64() * 1e3);
                break;
            }
        }
        sprite.delete()?;
        samples.push(took.ok_or("the watch ended before the sprite ran")?);
    }
    Ok(percentiles(samples).p50)
}

/// A sprite with a public URL leading to a `python3 -m http.server` service on `port`.
fn serving_sprite(client: &Client, name: &str, port: u16) -> Res<sprites::Sprite> {
    let sprite = client.create_sprite(name)?;
    sprite.update(&SpriteUpdate::new().url_settings(UrlSettings::public()))?;
    let p = port.to_string();
    let spec = ServiceSpec::new("python3")
        .args(["-m", "http.server", p.as_str(), "--bind", "127.0.0.1"])
        .http_port(port);
    sprite
        .create_service("web", &spec, Some(Duration::from_secs(1)))?
        .wait()?;
    Ok(sprite)
}

/// One `GET /` on a new connection to `addr` with `Host: host`, read to its end.
fn get_once(addr: SocketAddr, host: &str) -> Res<f64> {
    let started = Instant::now();
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        c,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut got = Vec::new();
    c.read_to_end(&mut got)?;
    if !(got.starts_with(b"HTTP/1.0 200") || got.starts_with(b"HTTP/1.1 200")) {
        return Err(format!("{:?}", String::from_utf8_lossy(&got[..got.len().min(60)])).into());
    }
    Ok(started.elapsed().as_secs_f64() * 1e6)
}

fn wait_serving(addr: SocketAddr, host: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get_once(addr, host) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// URL and direct round trips to the same server (host runtime), interleaved.
fn url_vs_direct(client: &Client, ep: &Endpoint, name: &str) -> Res<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let sprite = serving_sprite(client, name, port)?;
    let url_host = format!("{name}.localhost:{}", ep.addr.port());
    let direct: SocketAddr = ([127, 0, 0, 1], port).into();
    let result = (|| {
        wait_serving(ep.addr, &url_host)?;
        let (mut via_url, mut direct_rtt) = (Vec::new(), Vec::new());
        for _ in 0..URL_SAMPLES {
            via_url.push(get_once(ep.addr, &url_host)?);
            direct_rtt.push(get_once(direct, "localhost")?);
        }
        Ok((percentiles(via_url).p50, percentiles(direct_rtt).p50))
    })();
    let _ = sprite.delete();
    result
}

/// The URL round trip through a (sandboxed) server.
fn url_rtt(client: &Client, ep: &Endpoint, name: &str) -> Res<f64> {
    let sprite = serving_sprite(client, name, 8080)?;
    let url_host = format!("{name}.localhost:{}", ep.addr.port());
    let result = (|| {
        wait_serving(ep.addr, &url_host)?;
        let samples = (0..URL_SAMPLES)
            .map(|_| get_once(ep.addr, &url_host))
            .collect::<Res<Vec<f64>>>()?;
        Ok(percentiles(samples).p50)
    })();
    let _ = sprite.delete();
    result
}
