//! The WAN mode of the bench (`--wan-ms N`): every operation measured in round trips through
//! an in-process proxy that delays every byte by N ms in each direction (one RTT = 2N ms) and
//! the first byte of each new connection by one more RTT (what a TCP handshake costs before
//! the first request; plain HTTP, so no TLS round trips). The floor for a command, an echo or
//! a filesystem call is 1 RTT; a cold client's first command also pays its connection: 2 RTT.

use sprites::{Client, Sprite, Stdio};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Samples per warm figure (the median is reported).
const RUNS: usize = 15;
/// Fresh clients for the cold first-command figure.
const COLD_RUNS: usize = 7;
/// Samples of the read after a pause (each costs a pause).
const IDLE_RUNS: usize = 5;
/// The idle timeout of the proxy in front of the server for the read-after-a-pause figure:
/// it closes a connection after this long without a byte either way, as a server or load
/// balancer closes idle keep-alive connections. Scaled down (sprites-local's is 300 s, ureq's
/// pool has none, the cloud's is unknown) so the figure takes seconds, with the client's
/// keepalive ping interval scaled down alongside (15 s → [`IDLE_PING`]), so that, as with the
/// defaults, control connections are pinged well within the idle timeout.
const IDLE_CUT: Duration = Duration::from_secs(2);
/// The keepalive ping interval of the clients in the read-after-a-pause figure.
const IDLE_PING: Duration = Duration::from_millis(500);

/// The WAN figures, in RTTs (medians).
pub struct WanFigures {
    pub rtt_ms: f64,
    pub exec: f64,
    pub echo: f64,
    pub fs_write: f64,
    pub fs_read: f64,
    pub fs_stat: f64,
    pub info: f64,
    /// A warm client's small fs read after a pause longer than the connections' idle timeout,
    /// with control connections (the read finds one, kept alive by the keeper's pings)…
    pub fs_read_idle: f64,
    /// …and without (the pooled HTTP connection was closed: a new one).
    pub fs_read_idle_direct: f64,
    pub first_exec: f64,
    /// A cold client's first command with control connections off.
    pub first_exec_direct: f64,
    /// The same warm operations without the proxy, in ms (exec, echo, write, read, stat,
    /// info): the server's and the client's own time inside each WAN figure.
    pub local_ms: [f64; 6],
}

impl WanFigures {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "wan_rtt_ms": self.rtt_ms,
            "wan_exec_rtts": self.exec,
            "wan_echo_rtts": self.echo,
            "wan_fs_write_rtts": self.fs_write,
            "wan_fs_read_rtts": self.fs_read,
            "wan_fs_stat_rtts": self.fs_stat,
            "wan_info_rtts": self.info,
            "wan_fs_read_idle_rtts": self.fs_read_idle,
            "wan_fs_read_idle_direct_rtts": self.fs_read_idle_direct,
            "wan_first_exec_rtts": self.first_exec,
            "wan_first_exec_direct_rtts": self.first_exec_direct,
            "wan_local_ms": {
                "exec": self.local_ms[0], "echo": self.local_ms[1], "fs_write": self.local_ms[2],
                "fs_read": self.local_ms[3], "fs_stat": self.local_ms[4], "info": self.local_ms[5],
            },
        })
    }

    pub fn print(&self) {
        let row = |label: &str, v: f64, target: f64, local: Option<f64>| {
            let verdict = if v <= target { "met" } else { "MISSED" };
            let local = local.map_or(String::new(), |ms| {
                format!("; {ms:.2} ms without the proxy")
            });
            println!("{label:<36} {v:>6.2} RTT  (target <= {target}: {verdict}{local})");
        };
        println!(
            "WAN: {:.0} ms RTT (+1 RTT per new connection), plain HTTP",
            self.rtt_ms
        );
        let l = |i: usize| Some(self.local_ms[i]);
        row("wan exec `true` (warm client)", self.exec, 1.2, l(0));
        row("wan echo: cat, 1 byte + EOF", self.echo, 1.2, l(1));
        row("wan fs write (small)", self.fs_write, 1.2, l(2));
        row("wan fs read (small)", self.fs_read, 1.2, l(3));
        row("wan fs stat", self.fs_stat, 1.2, l(4));
        row("wan sprite info", self.info, 1.2, l(5));
        row(
            &format!(
                "wan fs read after {}s idle",
                (IDLE_CUT + IDLE_CUT / 2).as_secs_f64()
            ),
            self.fs_read_idle,
            1.2,
            None,
        );
        println!(
            "{:<36} {:>6.2} RTT  (the same without control connections: a new connection)",
            "  ... without control connections", self.fs_read_idle_direct
        );
        row(
            "wan first command (cold client)",
            self.first_exec,
            2.2,
            None,
        );
        row(
            "  ... without control connections",
            self.first_exec_direct,
            2.2,
            None,
        );
    }
}

/// Measures through a proxy with `one_way_ms` of delay each way in front of `server`.
/// `client_for` builds a client for a base URL (the caller's token), with or without control
/// connections, with a keepalive ping interval if one is given.
pub fn measure(
    server: SocketAddr,
    sprite_name: &str,
    one_way_ms: u64,
    client_for: &dyn Fn(&str, bool, Option<Duration>) -> Client,
) -> Result<WanFigures, Box<dyn std::error::Error>> {
    let proxy = DelayProxy::start(server, Duration::from_millis(one_way_ms))?;
    let rtt_ms = 2.0 * one_way_ms as f64;
    let url = format!("http://{}", proxy.addr);
    let rtts = |d: Duration| d.as_secs_f64() * 1e3 / rtt_ms;

    // Cold: a new client's first command (nothing pooled anywhere).
    let (mut cold, mut cold_direct) = (Vec::new(), Vec::new());
    for _ in 0..COLD_RUNS {
        let client = client_for(&url, true, None);
        let sprite = client.sprite(sprite_name);
        let started = Instant::now();
        let out = sprite.command("true").output()?;
        cold.push(rtts(started.elapsed()));
        assert!(out.status.success());
        // The same without control connections: no background dial beside the command.
        let sprite = client_for(&url, false, None).sprite(sprite_name);
        let started = Instant::now();
        let out = sprite.command("true").output()?;
        cold_direct.push(rtts(started.elapsed()));
        assert!(out.status.success());
    }

    // Warm: one client, its connections open; the same operations without the proxy say
    // how much of each figure is the server's and the client's own time.
    let wan = ops(&client_for(&url, true, None).sprite(sprite_name))?;
    let local = ops(&client_for(&format!("http://{server}"), true, None).sprite(sprite_name))?;
    drop(proxy);
    let (fs_read_idle, fs_read_idle_direct) = read_after_idle(
        server,
        sprite_name,
        Duration::from_millis(one_way_ms),
        client_for,
    )?;
    let r = |i: usize| rtts(wan[i]);
    let l = |i: usize| local[i].as_secs_f64() * 1e3;
    Ok(WanFigures {
        rtt_ms,
        exec: r(0),
        echo: r(1),
        fs_write: r(2),
        fs_read: r(3),
        fs_stat: r(4),
        info: r(5),
        fs_read_idle: fs_read_idle / rtt_ms,
        fs_read_idle_direct: fs_read_idle_direct / rtt_ms,
        first_exec: median(cold),
        first_exec_direct: median(cold_direct),
        local_ms: [l(0), l(1), l(2), l(3), l(4), l(5)],
    })
}

/// Medians of: exec `true`, echo, fs write, fs read, fs stat, sprite info, on a warm client.
fn ops(sprite: &Sprite) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    warm(sprite)?;
    let fs = sprite.fs();
    // A directory of its own: a stat lists the parent, and a big one (a host's /tmp) would
    // measure the listing rather than the round trip.
    let dir = format!("/tmp/sprites-wan-bench-{}", std::process::id());
    fs.create_dir_all(&dir)?;
    let path = format!("{dir}/file");
    fs.write(&path, b"hello")?;
    let figure = |f: &mut dyn FnMut() -> std::io::Result<()>| -> std::io::Result<Duration> {
        // Two unmeasured rounds first: whatever the operation keeps warm is warm.
        f()?;
        f()?;
        let mut samples = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            f()?;
            samples.push(started.elapsed());
        }
        samples.sort();
        Ok(samples[samples.len() / 2])
    };
    let figures = vec![
        figure(&mut || {
            let out = sprite.command("true").output()?;
            assert!(out.status.success());
            Ok(())
        })?,
        figure(&mut || {
            let mut child = sprite
                .command("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(b"x")?;
            drop(stdin);
            let mut byte = [0u8; 1];
            child
                .stdout
                .as_mut()
                .expect("piped")
                .read_exact(&mut byte)?;
            assert_eq!(&byte, b"x");
            assert!(child.wait()?.success());
            Ok(())
        })?,
        figure(&mut || fs.write(&path, b"hello world"))?,
        figure(&mut || {
            assert_eq!(fs.read(&path)?, b"hello world");
            Ok(())
        })?,
        figure(&mut || {
            assert!(fs.metadata(&path)?.is_file());
            Ok(())
        })?,
        figure(&mut || {
            sprite.info().map_err(std::io::Error::from)?;
            Ok(())
        })?,
    ];
    let _ = fs.remove_dir_all(&dir);
    Ok(figures)
}

/// A warm client's small fs read after a pause longer than the idle timeout of a proxy that
/// closes idle connections ([`IDLE_CUT`]), with and without control connections: medians in
/// ms. Both clients pause together, so the figure costs `IDLE_RUNS` pauses.
fn read_after_idle(
    server: SocketAddr,
    sprite_name: &str,
    delay: Duration,
    client_for: &dyn Fn(&str, bool, Option<Duration>) -> Client,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let proxy = DelayProxy::start_with_idle_cut(server, delay, Some(IDLE_CUT))?;
    let url = format!("http://{}", proxy.addr);
    let control = client_for(&url, true, Some(IDLE_PING)).sprite(sprite_name);
    let direct = client_for(&url, false, Some(IDLE_PING)).sprite(sprite_name);
    let path = format!("/tmp/sprites-wan-idle-{}", std::process::id());
    control.fs().write(&path, b"hello")?;
    // Warm: a control connection in the pool, an HTTP connection in each agent.
    control.connect()?;
    direct.connect()?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..IDLE_RUNS {
        std::thread::sleep(IDLE_CUT + IDLE_CUT / 2);
        for (sprite, samples) in [(&control, &mut with), (&direct, &mut without)] {
            let started = Instant::now();
            assert_eq!(sprite.fs().read(&path)?, b"hello");
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = control.fs().remove_file(&path);
    Ok((median(with), median(without)))
}

/// Opens what a warm client has open.
fn warm(sprite: &Sprite) -> Result<(), Box<dyn std::error::Error>> {
    sprite.connect()?;
    Ok(())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// A TCP proxy that holds every chunk for `delay` in each direction, and the first chunk a
/// client sends on a new connection for one more round trip (`2 × delay`).
pub struct DelayProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    pub fn start(target: SocketAddr, delay: Duration) -> std::io::Result<DelayProxy> {
        DelayProxy::start_with_idle_cut(target, delay, None)
    }

    /// [`start`](Self::start), closing each connection after `idle_cut` without a byte
    /// either way.
    fn start_with_idle_cut(
        target: SocketAddr,
        delay: Duration,
        idle_cut: Option<Duration>,
    ) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let heard = Arc::new(Mutex::new(Instant::now()));
                if let Some(cut) = idle_cut
                    && let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone())
                {
                    let heard = heard.clone();
                    std::thread::spawn(move || {
                        loop {
                            // Sleeps to the connection's idle deadline, not a poll.
                            let due = *heard.lock().unwrap() + cut;
                            let now = Instant::now();
                            if now >= due {
                                let _ = c3.shutdown(Shutdown::Both);
                                let _ = s3.shutdown(Shutdown::Both);
                                return;
                            }
                            std::thread::sleep(due - now);
                        }
                    });
                }
                pipe(client, server, delay, Some(2 * delay), heard.clone());
                pipe(s2, c2, delay, None, heard);
            }
        });
        Ok(DelayProxy { addr, stop })
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` → `to`, each chunk sent `delay` after it arrived (plus `setup` for the
/// first one): a reader thread timestamps chunks, a writer thread releases them on time.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    setup: Option<Duration>,
    heard: Arc<Mutex<Instant>>,
) {
    let (tx, rx) = crossbeam_channel::unbounded::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut extra = setup;
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    *heard.lock().unwrap() = Instant::now();
                    let due = Instant::now() + delay + extra.take().unwrap_or_default();
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            // The chunk's scheduled departure: a deadline, not a poll.
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
