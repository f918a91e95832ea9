//! `wan_proxy_rtts` (`--wan-ms N`): a warm client's `proxy_socket` to an echo server in the
//! sprite plus a one-byte echo, in round trips through the WAN proxy of `wan.rs`: over a
//! pooled control connection (PROTOCOL.md §8.4: the start and its reply, then the echo) and
//! over a `/proxy` socket of its own (a new connection, its upgrade, the init message and its
//! reply, then the echo). `wan_forward_rtts`: the same through a `PortForward` (a local TCP
//! connection to the forwarded port, one byte out and back), where on a warm pool the local
//! client's byte goes out with the proxy start (one round trip in all).

use crate::wan::DelayProxy;
use sprites::{Client, Sprite, Stdio};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Samples per figure (the median is reported).
const RUNS: usize = 15;

/// An echo server for one connection at a time (echo until EOF, close, next); prints its
/// port first.
const ECHO_LOOP: &str = "import socket\n\
    s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(8)\n\
    print(s.getsockname()[1], flush=True)\n\
    while True:\n\
    \x20   c,_=s.accept()\n\
    \x20   while True:\n\
    \x20       b=c.recv(1<<16)\n\
    \x20       if not b: break\n\
    \x20       c.sendall(b)\n\
    \x20   c.close()\n";

/// The proxy figures, in RTTs (medians).
pub struct ProxyRtts {
    /// Over a warm control connection.
    pub control: f64,
    /// Over a `/proxy` socket of its own (control connections off).
    pub direct: f64,
    /// A forwarded port's connection + echo, over a warm control connection.
    pub forward: f64,
    /// The same with control connections off.
    pub forward_direct: f64,
}

/// Measures through a proxy with `one_way_ms` of delay each way in front of `server`; the
/// echo server runs in `sprite` (reached without the delay). `client_for` builds a client
/// for a base URL, with or without control connections.
pub fn measure(
    server: SocketAddr,
    sprite: &Sprite,
    one_way_ms: u64,
    client_for: &dyn Fn(&str, bool) -> Client,
) -> Result<ProxyRtts, Box<dyn std::error::Error>> {
    let mut echo = sprite
        .command("python3")
        .args(["-c", ECHO_LOOP])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(echo.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let target = format!("localhost:{}", line.trim());
    let proxy = DelayProxy::start(server, Duration::from_millis(one_way_ms))?;
    let url = format!("http://{}", proxy.addr);
    let rtt_ms = 2.0 * one_way_ms as f64;
    let figure = |control: bool| -> Result<f64, Box<dyn std::error::Error>> {
        let warm = client_for(&url, control).sprite(sprite.name());
        warm.connect()?;
        let mut samples = Vec::with_capacity(RUNS);
        // Two unmeasured rounds first: whatever a proxy keeps warm is warm.
        for i in 0..RUNS + 2 {
            let started = Instant::now();
            let mut conn = warm.proxy_socket(&target)?;
            conn.write_all(b"x")?;
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)?;
            let took = started.elapsed();
            assert_eq!(&byte, b"x");
            assert_eq!(conn.over_control(), control, "the way the proxy went");
            // A clean end (both directions), outside the measurement: the control
            // connection goes back to the pool for the next round.
            conn.shutdown(Shutdown::Write)?;
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest)?;
            drop(conn);
            if i >= 2 {
                samples.push(took.as_secs_f64() * 1e3 / rtt_ms);
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        Ok(samples[samples.len() / 2])
    };
    let forward_figure = |control: bool| -> Result<f64, Box<dyn std::error::Error>> {
        let warm = client_for(&url, control).sprite(sprite.name());
        warm.connect()?;
        let port: u16 = target.trim_start_matches("localhost:").parse()?;
        let forward = warm.forward_port(0, port)?;
        let mut samples = Vec::with_capacity(RUNS);
        for i in 0..RUNS + 2 {
            let started = Instant::now();
            let mut conn = TcpStream::connect(forward.local_addr())?;
            conn.set_nodelay(true)?;
            conn.write_all(b"x")?;
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)?;
            let took = started.elapsed();
            assert_eq!(&byte, b"x");
            conn.shutdown(Shutdown::Write)?;
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest)?;
            drop(conn);
            // Its tunnel's control connection is back in the pool before the next.
            let deadline = Instant::now() + Duration::from_secs(10);
            while forward.open_connections() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if i >= 2 {
                samples.push(took.as_secs_f64() * 1e3 / rtt_ms);
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        Ok(samples[samples.len() / 2])
    };
    let result = (|| {
        Ok(ProxyRtts {
            control: figure(true)?,
            direct: figure(false)?,
            forward: forward_figure(true)?,
            forward_direct: forward_figure(false)?,
        })
    })();
    drop(proxy);
    let _ = echo.kill();
    result
}
