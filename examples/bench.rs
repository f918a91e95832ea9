//! What users feel, beside this machine's own baselines measured in the same run.
//!
//! ```text
//! cargo run --release --example bench            # human table
//! cargo run --release --example bench -- --json  # ... and a JSON object as the last line
//! cargo run --release --example bench -- --streams # only the byte streams (quick, for A/B runs)
//! cargo run --release --example bench -- --only checkpoints [--json]  # one group alone
//! cargo run --release --example bench -- --wan-ms 10 [--json]  # round trips through a WAN proxy
//! ```
//!
//! `--wan-ms N` measures only the round-trip figures: each operation through an in-process
//! proxy that delays every byte by N ms each way (`bench/wan.rs`), and the local exec round trip
//! over a control connection and over a direct socket beside a local spawn of `true`.
//!
//! Uses `SPRITES_API_URL`/`SPRITES_TOKEN` when set; otherwise starts `sprites-local` in a child
//! process (this program re-run with `SPRITES_BENCH_SERVE` set), so the client's memory is
//! measured without the server's, and the server's own (per idle connection) can be read.

// The JSON summary is one `json!` literal with more keys than the macro's default recursion
// limit expands.
#![recursion_limit = "256"]

#[path = "bench/checkpoints.rs"]
mod checkpoints;
#[path = "bench/lifecycle.rs"]
mod lifecycle;
#[path = "bench/policy.rs"]
mod policy;

use sprites::{Client, Sprite, Stdio};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "bench/stdin_floor.rs"]
mod stdin_floor;
#[path = "bench/tunnel.rs"]
mod tunnel;
#[path = "bench/wan.rs"]
mod wan;
#[path = "bench/wan_proxy.rs"]
mod wan_proxy;

const SERVE_VAR: &str = "SPRITES_BENCH_SERVE";
const RUNTIME_VAR: &str = "SPRITES_BENCH_RUNTIME";
const MIB: f64 = 1024.0 * 1024.0;
/// Idle connections held to measure what one costs the server.
const IDLE_FOR_RSS: usize = 10_000;
/// Idle connections held while exec round trips are measured again.
const IDLE_FOR_EXEC: usize = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os(SERVE_VAR) {
        return serve(dir.into());
    }
    let json = std::env::args().any(|a| a == "--json");
    if std::env::args().any(|a| a == "--streams") {
        return streams_only(json);
    }
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .windows(2)
        .find(|w| w[0] == "--only")
        .map(|w| w[1].clone());
    if let Some(i) = args.iter().position(|a| a == "--wan-ms") {
        let ms = args
            .get(i + 1)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .ok_or("--wan-ms needs a positive number of milliseconds")?;
        return wan_main(ms, json);
    }
    let (client, mut server, runtime, endpoint) = connect(None)?;
    if let Some(group) = only {
        let result = match group.as_str() {
            "checkpoints" => checkpoints::only(&client, &runtime, json),
            other => Err(format!("--only {other}: unknown group (checkpoints)").into()),
        };
        if let Some(child) = server.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        return result;
    }
    // Against a local sandbox, measure the host runtime beside it: the sandbox's cost is the
    // difference.
    let host = match (&server, runtime.as_str()) {
        (Some(_), "sandbox") => Some(connect(Some("host"))?),
        _ => None,
    };
    let name = format!("bench-{}", std::process::id());
    let first_output = create_to_first_output_ms(&client, &format!("{name}-first"))?;
    let host_figures = match &host {
        Some((host_client, _, _, _)) => {
            let first = create_to_first_output_ms(host_client, &format!("{name}-hfirst"))?;
            let sprite = host_client.create_sprite(&format!("{name}-host"))?;
            let rtt = exec_rtt_ms(&sprite, 300)?;
            let _ = sprite.delete();
            Some((rtt, first))
        }
        None => None,
    };
    lifecycle::measure(
        (&client, endpoint.as_ref(), runtime.as_str()),
        host.as_ref().map(|(c, _, _, ep)| (c, ep.as_ref())),
        &format!("{name}-life"),
    );
    let sprite = client.create_sprite(&name)?;
    // The server's own figures need the server: a local child process, not a remote API.
    let local = server
        .as_ref()
        .zip(endpoint)
        .map(|(child, endpoint)| Local {
            pid: child.id(),
            endpoint,
        });
    let result = run(
        &sprite,
        json,
        &runtime,
        first_output,
        host_figures,
        local.as_ref(),
    );
    let _ = sprite.delete();
    for child in server
        .iter_mut()
        .chain(host.map(|(_, c, _, _)| c).iter_mut().flatten())
    {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// `--wan-ms N`: the round-trip figures only.
fn wan_main(one_way_ms: u64, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    // SPRITES_BENCH_RUNTIME=host|sandbox picks the local server's runtime (default auto).
    let runtime = std::env::var(RUNTIME_VAR).ok();
    let (client, mut server, runtime, endpoint) = connect(runtime.as_deref())?;
    let endpoint = endpoint.ok_or("--wan-ms needs the local server (unset SPRITES_TOKEN)")?;
    let name = format!("bench-wan-{}", std::process::id());
    let sprite = client.create_sprite(&name)?;
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let spawn = local_spawn_ms(300);
        // Locally, on a warm control connection and on a socket per command.
        sprite.connect()?;
        let control = exec_rtt_ms(&sprite, 300)?;
        let direct_client = Client::builder()
            .base_url(format!("http://{}", endpoint.addr))
            .token(&endpoint.token)
            .control_connections(false)
            .build()?;
        let direct = exec_rtt_ms(&direct_client.sprite(&name), 300)?;
        let token = endpoint.token.clone();
        let client_with = |url: &str, control: bool, ping: Option<Duration>| {
            let mut builder = Client::builder()
                .base_url(url)
                .token(&token)
                .control_connections(control);
            if let Some(ping) = ping {
                builder = builder.keepalive(ping, ping * 10);
            }
            builder.build().expect("client")
        };
        let client_for = |url: &str, control: bool| client_with(url, control, None);
        let figures = wan::measure(endpoint.addr, &name, one_way_ms, &client_with)?;
        let proxy = wan_proxy::measure(endpoint.addr, &sprite, one_way_ms, &client_for)?;
        println!("runtime: {runtime}");
        row("measure", "value", "vs baseline");
        row(
            "baseline: local spawn+wait `true` p50",
            format!("{:.3} ms", spawn.p50),
            "",
        );
        row(
            "exec round trip, control conn p50",
            format!("{:.3} ms", control.p50),
            format!("+{:.3} ms", control.p50 - spawn.p50),
        );
        row(
            "exec round trip, own socket p50",
            format!("{:.3} ms", direct.p50),
            format!("+{:.3} ms", direct.p50 - spawn.p50),
        );
        figures.print();
        println!(
            "{:<36} {:>6.2} RTT  (a /proxy socket of its own: {:.2} RTT)",
            "wan proxy_socket + 1-byte echo", proxy.control, proxy.direct
        );
        println!(
            "{:<36} {:>6.2} RTT  (a /proxy socket of its own: {:.2} RTT)",
            "wan forwarded port: 1-byte echo", proxy.forward, proxy.forward_direct
        );
        if json {
            let mut out = figures.json();
            out["wan_proxy_rtts"] = proxy.control.into();
            out["wan_proxy_direct_rtts"] = proxy.direct.into();
            out["wan_forward_rtts"] = proxy.forward.into();
            out["wan_forward_direct_rtts"] = proxy.forward_direct.into();
            out["runtime"] = runtime.clone().into();
            out["baseline_spawn_ms"] = spawn.p50.into();
            out["exec_rtt_control_p50_ms"] = control.p50.into();
            out["exec_rtt_control_minus_spawn_ms"] = (control.p50 - spawn.p50).into();
            out["exec_rtt_direct_p50_ms"] = direct.p50.into();
            println!("{out}");
        }
        Ok(())
    })();
    let _ = sprite.delete();
    if let Some(child) = server.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// Create a sprite and time until its first command's output is in hand.
fn create_to_first_output_ms(
    client: &Client,
    name: &str,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let sprite = client.create_sprite(name)?;
    let out = sprite.command("echo").arg("hi").output()?;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(out.stdout, b"hi\n");
    sprite.delete()?;
    Ok(elapsed)
}

/// A server this program started: where it is and which process it is.
struct Local {
    pid: u32,
    endpoint: Endpoint,
}

/// Latency of a small API request (`GET /v1/sprites/{name}`), raw HTTP.
struct ApiFigures {
    keepalive: Percentiles,
    new_conn: Percentiles,
}

/// What the server costs per idle connection, and exec latency beside idle connections.
struct IdleFigures {
    /// Idle connections actually held (the fd limit may allow fewer than asked).
    held: usize,
    rss_per_conn_bytes: f64,
    exec_held: usize,
    exec_p50_ms: f64,
}

fn run(
    sprite: &Sprite,
    json: bool,
    runtime: &str,
    first_output_ms: f64,
    host: Option<(Percentiles, f64)>,
    local: Option<&Local>,
) -> Result<(), Box<dyn std::error::Error>> {
    let spawn = local_spawn_ms(200);
    // Commands run over the sprite's control connection once one is open (PROTOCOL.md §8).
    sprite.connect()?;
    let tcp = loopback_tcp_mib_s(1 << 30)?;
    let (tcp_best, _) = tunnel::tcp_best_mib_s(1 << 30)?;
    let disk = local_disk_write_mib_s(1 << 30)?;
    let exec = exec_rtt_ms(sprite, 300)?;
    let stdout = stdout_mib_s(sprite, 1 << 30)?;
    let stdin = stdin_mib_s(sprite, 256 << 20)?;
    let stdin_floor = stdin_floor::local_cat_relay_best_mib_s(256 << 20)?;
    let echo = echo_rtt_us(sprite, 2000)?;
    let tty_echo = tty_echo_rtt_us(sprite, 2000)?;
    let attach = attach_ms(sprite, 100)?;
    let (proxy_down, proxy_up) = tunnel::proxy_mib_s(sprite, 512 << 20)?;
    let proxy = proxy_down.min(proxy_up);
    let proxy_floor = tunnel::relay_floor_best_mib_s(1 << 30)?;
    let dns = policy::dns_figures(sprite, runtime, 2000);
    // A server without the filesystem API still gets the rest of the report.
    let (upload, download) = match fs_mib_s(sprite, 1 << 30) {
        Ok((up, down)) => (Some(up), Some(down)),
        Err(err) => {
            eprintln!("bench: filesystem measurements skipped: {err}");
            (None, None)
        }
    };
    let api = match local {
        Some(local) => Some(api_figures(sprite, local)?),
        None => None,
    };
    let idle = match local {
        Some(local) => Some(idle_figures(sprite, local)?),
        None => None,
    };
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", 100.0 * v / tcp));
    let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} MiB/s"));
    let peak_rss = peak_rss_mib();

    println!("runtime: {runtime}");
    row("measure", "value", "vs baseline");
    row(
        "baseline: local spawn+wait `true` p50",
        format!("{:.3} ms", spawn.p50),
        "",
    );
    row("baseline: loopback TCP", format!("{tcp:.0} MiB/s"), "");
    row(
        "exec round trip `true` p50",
        format!("{:.3} ms", exec.p50),
        format!("+{:.3} ms", exec.p50 - spawn.p50),
    );
    row(
        "exec round trip `true` p99",
        format!("{:.3} ms", exec.p99),
        format!("+{:.3} ms", exec.p99 - spawn.p50),
    );
    row(
        "stdout throughput (1 GiB)",
        format!("{stdout:.0} MiB/s"),
        format!("{:.0}%", 100.0 * stdout / tcp),
    );
    row(
        "stdin->stdout via cat (256 MiB)",
        format!("{stdin:.0} MiB/s"),
        format!("{:.0}%", 100.0 * stdin / tcp),
    );
    row(
        "baseline: loopback TCP, best 64K-1M buf",
        format!("{tcp_best:.0} MiB/s"),
        "",
    );
    row(
        "stdin->stdout via cat vs best TCP",
        "",
        format!("{:.0}%", 100.0 * stdin / tcp_best),
    );
    row(
        "  floor: TCP -> local cat -> TCP relay",
        format!("{stdin_floor:.0} MiB/s"),
        format!(
            "{:.0}% of best TCP; sprite path {:.0}% of it",
            100.0 * stdin_floor / tcp_best,
            100.0 * stdin / stdin_floor
        ),
    );
    row(
        "TCP proxy, sprite -> client (512 MiB)",
        format!("{proxy_down:.0} MiB/s"),
        format!("{:.0}%", 100.0 * proxy_down / tcp_best),
    );
    row(
        "TCP proxy, client -> sprite (512 MiB)",
        format!("{proxy_up:.0} MiB/s"),
        format!("{:.0}%", 100.0 * proxy_up / tcp_best),
    );
    row(
        "  floor: TCP -> local relay -> TCP",
        format!("{proxy_floor:.0} MiB/s"),
        format!(
            "{:.0}% of best TCP; proxy {:.0}% of it",
            100.0 * proxy_floor / tcp_best,
            100.0 * proxy / proxy_floor
        ),
    );
    row("1-byte echo via cat p50", format!("{:.0} us", echo.p50), "");
    row("1-byte echo via cat p99", format!("{:.0} us", echo.p99), "");
    row(
        "keystroke echo, terminal p50",
        format!("{:.0} us", tty_echo.p50),
        format!("{:+.0} us", tty_echo.p50 - echo.p50),
    );
    row(
        "keystroke echo, terminal p99",
        format!("{:.0} us", tty_echo.p99),
        format!("{:+.0} us", tty_echo.p99 - echo.p99),
    );
    row(
        "attach -> first scrollback byte p50",
        format!("{:.3} ms", attach.p50),
        "",
    );
    row(
        "create -> first output",
        format!("{first_output_ms:.1} ms"),
        "",
    );
    if let Some((host_rtt, host_first)) = &host {
        row(
            "host runtime: exec round trip p50",
            format!("{:.3} ms", host_rtt.p50),
            format!("sandbox +{:.3}", exec.p50 - host_rtt.p50),
        );
        row(
            "host runtime: create -> first output",
            format!("{host_first:.1} ms"),
            "",
        );
    }
    row(
        "baseline: local file write (best buffer)",
        format!("{disk:.0} MiB/s"),
        "",
    );
    row("fs upload (1 GiB)", rate(upload), pct(upload));
    row(
        "fs upload vs local file write",
        "",
        upload.map_or("-".to_owned(), |u| format!("{:.0}%", 100.0 * u / disk)),
    );
    row("fs download (1 GiB)", rate(download), pct(download));
    if let Some(a) = &api {
        row(
            "API GET p50 (keep-alive)",
            format!("{:.0} us", a.keepalive.p50),
            "",
        );
        row(
            "API GET p50 (new connection)",
            format!("{:.0} us", a.new_conn.p50),
            "",
        );
    }
    if let Some(i) = &idle {
        row(
            &format!("server RSS per idle conn ({} held)", i.held),
            format!("{:.0} B", i.rss_per_conn_bytes),
            "",
        );
        row(
            &format!("exec p50 beside {} idle conns", i.exec_held),
            format!("{:.3} ms", i.exec_p50_ms),
            format!("{:+.0}%", 100.0 * (i.exec_p50_ms / exec.p50 - 1.0)),
        );
    }
    if let Some(d) = &dns {
        row(
            "denied name REFUSED p50 (in sprite)",
            format!("{:.0} µs", d.refused_p50_us),
            format!("{:.2}x udp echo", d.refused_p50_us / d.echo_p50_us),
        );
    }
    row("client peak RSS", format!("{peak_rss:.1} MiB"), "");
    let life = lifecycle::figures();
    if let Some(l) = life {
        row(
            "create -> running (watch), p50",
            format!("{:.1} ms", l.create_to_running_ms),
            "",
        );
        if let (Some(u), Some(d)) = (l.url_rtt_p50_us, l.direct_rtt_p50_us) {
            row(
                "URL GET p50 (host runtime)",
                format!("{u:.0} us"),
                format!("direct {d:.0} us"),
            );
            row("URL overhead vs direct", format!("{:+.0} us", u - d), "");
        }
        if let Some(u) = l.sandbox_url_rtt_p50_us {
            row("URL GET p50 (sandbox)", format!("{u:.0} us"), "");
        }
    }
    let cp = match checkpoints::measure(sprite, runtime) {
        Ok(f) => Some(f),
        Err(err) => {
            eprintln!("bench: checkpoint measurements skipped: {err}");
            None
        }
    };
    if let Some(f) = &cp {
        checkpoints::print(f);
    }
    if json {
        let mut all = serde_json::json!({
                "exec_rtt_p50_ms": exec.p50,
                "exec_rtt_control_p50_ms": exec.p50,
                "exec_rtt_p99_ms": exec.p99,
                "stdout_mib_s": stdout,
                "stdin_mib_s": stdin,
                "echo_rtt_p50_us": echo.p50,
                "echo_rtt_p99_us": echo.p99,
                "tty_echo_rtt_p50_us": tty_echo.p50,
                "tty_echo_rtt_p99_us": tty_echo.p99,
                "tty_echo_minus_echo_p50_us": tty_echo.p50 - echo.p50,
                "attach_ms": attach.p50,
                "attach_p99_ms": attach.p99,
                "peak_rss_mib": peak_rss,
                "baseline_tcp_mib_s": tcp,
                "baseline_spawn_ms": spawn.p50,
                "baseline_disk_write_mib_s": disk,
                "fs_upload_vs_disk": upload.map(|u| u / disk),
                "runtime": runtime,
                "create_to_first_output_ms": first_output_ms,
                "host_exec_rtt_p50_ms": host.as_ref().map(|(r, _)| r.p50),
                "host_create_to_first_output_ms": host.as_ref().map(|(_, f)| *f),
                "sandbox_exec_overhead_ms": host.as_ref().map(|(r, _)| exec.p50 - r.p50),
                "fs_upload_mib_s": upload,
                "fs_download_mib_s": download,
                "stdout_vs_tcp": stdout / tcp,
                "stdin_vs_tcp": stdin / tcp,
                "exec_rtt_minus_spawn_ms": exec.p50 - spawn.p50,
                "api_keepalive_p50_us": api.as_ref().map(|a| a.keepalive.p50),
                "api_keepalive_p99_us": api.as_ref().map(|a| a.keepalive.p99),
                "api_new_conn_p50_us": api.as_ref().map(|a| a.new_conn.p50),
                "api_new_conn_p99_us": api.as_ref().map(|a| a.new_conn.p99),
                "idle_conns_held": idle.as_ref().map(|i| i.held),
                "server_rss_per_idle_conn_bytes": idle.as_ref().map(|i| i.rss_per_conn_bytes),
                "exec_rtt_p50_idle_conns": idle.as_ref().map(|i| i.exec_held),
                "exec_rtt_p50_ms_beside_idle_conns": idle.as_ref().map(|i| i.exec_p50_ms),
                "exec_rtt_idle_vs_quiet": idle.as_ref().map(|i| i.exec_p50_ms / exec.p50),
                "create_to_running_ms": life.map(|l| l.create_to_running_ms),
                "url_rtt_p50_us": life.and_then(|l| l.url_rtt_p50_us),
                "url_direct_rtt_p50_us": life.and_then(|l| l.direct_rtt_p50_us),
                "url_overhead_us": life.and_then(|l| Some(l.url_rtt_p50_us? - l.direct_rtt_p50_us?)),
                "sandbox_url_rtt_p50_us": life.and_then(|l| l.sandbox_url_rtt_p50_us),
                "baseline_tcp_best_mib_s": tcp_best,
                "stdin_vs_tcp_best": stdin / tcp_best,
                "stdin_floor_mib_s": stdin_floor,
                "stdin_vs_floor": stdin / stdin_floor,
                "proxy_mib_s": proxy,
                "proxy_down_mib_s": proxy_down,
                "proxy_up_mib_s": proxy_up,
                "proxy_vs_tcp_best": proxy / tcp_best,
                "proxy_floor_mib_s": proxy_floor,
                "proxy_vs_floor": proxy / proxy_floor,
                "dns_refused_p50_us": dns.as_ref().map(|d| d.refused_p50_us),
                "dns_refused_p99_us": dns.as_ref().map(|d| d.refused_p99_us),
                "dns_udp_echo_p50_us": dns.as_ref().map(|d| d.echo_p50_us),
                "dns_refused_vs_udp_echo": dns.as_ref().map(|d| d.refused_p50_us / d.echo_p50_us),
        });
        if let (Some(f), Some(obj)) = (&cp, all.as_object_mut()) {
            obj.extend(
                checkpoints::json(f)
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        println!("{all}");
    }
    Ok(())
}

/// `--streams`: only the byte-stream figures and their baselines, against one server.
fn streams_only(json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let (client, mut server, runtime, _) = connect(None)?;
    let sprite = client.create_sprite(&format!("bench-streams-{}", std::process::id()))?;
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        // SPRITES_BENCH_ONLY=stdin|stdout|proxy|tcp (comma-separated) runs only those, for
        // profiling one path; the others report 0.
        let only = std::env::var("SPRITES_BENCH_ONLY").ok();
        let want = |what: &str| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|w| w == what))
        };
        let tcp = if want("tcp") {
            loopback_tcp_mib_s(1 << 30)?
        } else {
            1.0
        };
        let (tcp_best, sizes) = if want("tcp") {
            tunnel::tcp_best_mib_s(1 << 30)?
        } else {
            (1.0, Vec::new())
        };
        let stdout = if want("stdout") {
            stdout_mib_s(&sprite, 1 << 30)?
        } else {
            0.0
        };
        let stdin = if want("stdin") {
            stdin_mib_s(&sprite, 256 << 20)?
        } else {
            0.0
        };
        let stdin_floor = if want("stdin") {
            stdin_floor::local_cat_relay_best_mib_s(256 << 20)?
        } else {
            1.0
        };
        let (proxy_down, proxy_up) = if want("proxy") {
            tunnel::proxy_mib_s(&sprite, 512 << 20)?
        } else {
            (0.0, 0.0)
        };
        let proxy = proxy_down.min(proxy_up);
        let proxy_floor = if want("proxy") {
            tunnel::relay_floor_best_mib_s(1 << 30)?
        } else {
            1.0
        };
        println!("runtime: {runtime}");
        row(
            "baseline: loopback TCP (64 KiB)",
            format!("{tcp:.0} MiB/s"),
            "",
        );
        for (size, rate) in &sizes {
            row(
                &format!("  loopback TCP, {} KiB buffers", size >> 10),
                format!("{rate:.0} MiB/s"),
                "",
            );
        }
        let vs = |v: f64| format!("{:.0}% / {:.0}%", 100.0 * v / tcp, 100.0 * v / tcp_best);
        row("(vs 64K / vs best)", "", "");
        row(
            "stdout throughput (1 GiB)",
            format!("{stdout:.0} MiB/s"),
            vs(stdout),
        );
        row(
            "stdin->stdout via cat (256 MiB)",
            format!("{stdin:.0} MiB/s"),
            vs(stdin),
        );
        row(
            "  floor: TCP -> local cat -> TCP relay",
            format!("{stdin_floor:.0} MiB/s"),
            format!("sprite path {:.0}% of it", 100.0 * stdin / stdin_floor),
        );
        row(
            "TCP proxy sprite->client",
            format!("{proxy_down:.0} MiB/s"),
            vs(proxy_down),
        );
        row(
            "TCP proxy client->sprite",
            format!("{proxy_up:.0} MiB/s"),
            vs(proxy_up),
        );
        row(
            "  floor: TCP -> local relay -> TCP",
            format!("{proxy_floor:.0} MiB/s"),
            format!("proxy {:.0}% of it", 100.0 * proxy / proxy_floor),
        );
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "runtime": runtime,
                    "baseline_tcp_mib_s": tcp,
                    "baseline_tcp_best_mib_s": tcp_best,
                    "stdout_mib_s": stdout,
                    "stdin_mib_s": stdin,
                    "stdin_vs_tcp": stdin / tcp,
                    "stdin_vs_tcp_best": stdin / tcp_best,
                    "stdin_floor_mib_s": stdin_floor,
                    "stdin_vs_floor": stdin / stdin_floor,
                    "proxy_mib_s": proxy,
                    "proxy_down_mib_s": proxy_down,
                    "proxy_up_mib_s": proxy_up,
                    "proxy_vs_tcp_best": proxy / tcp_best,
                    "proxy_floor_mib_s": proxy_floor,
                    "proxy_vs_floor": proxy / proxy_floor,
                })
            );
        }
        Ok(())
    })();
    let _ = sprite.delete();
    if let Some(child) = server.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// One line of the table: what, its value, and how it compares with the baseline.
fn row(label: &str, value: impl std::fmt::Display, vs_baseline: impl std::fmt::Display) {
    println!("{label:<38} {value:>12} {vs_baseline:>12}");
}

struct Percentiles {
    p50: f64,
    p99: f64,
}

fn percentiles(mut samples: Vec<f64>) -> Percentiles {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Reads `r` to its end in `buf_size` reads; the bytes read.
fn count_to_eof(r: &mut impl Read, buf_size: usize) -> std::io::Result<usize> {
    let mut buf = vec![0u8; buf_size];
    let mut got = 0;
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(got),
            n => got += n,
        }
    }
}

fn local_spawn_ms(runs: usize) -> Percentiles {
    let samples = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = std::process::Command::new("true")
                .status()
                .expect("spawn true");
            assert!(status.success());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    percentiles(samples)
}

/// Writing `total` bytes to a local file (no fsync, as the server's writes are without
/// `--durable-writes`): the best of 64 KiB, 256 KiB and 1 MiB writes, what an upload cannot
/// beat.
fn local_disk_write_mib_s(total: usize) -> std::io::Result<f64> {
    let path = std::env::temp_dir().join(format!("sprites-bench-disk-{}", std::process::id()));
    let mut best = 0f64;
    for size in [64 << 10, 256 << 10, 1 << 20] {
        let buf = vec![5u8; size];
        let started = Instant::now();
        let mut file = std::fs::File::create(&path)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            file.write_all(&buf[..n])?;
            left -= n;
        }
        drop(file);
        best = best.max(total as f64 / MIB / started.elapsed().as_secs_f64());
        std::fs::remove_file(&path)?;
    }
    Ok(best)
}

/// Bytes through a loopback TCP connection, writer and reader in two threads, 64 KiB buffers.
fn loopback_tcp_mib_s(total: usize) -> std::io::Result<f64> {
    tunnel::tcp_mib_s(total, 64 << 10)
}

fn exec_rtt_ms(sprite: &Sprite, runs: usize) -> std::io::Result<Percentiles> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let status = sprite
            .command("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(status.success());
    }
    Ok(percentiles(samples))
}

fn stdout_mib_s(sprite: &Sprite, total: u64) -> std::io::Result<f64> {
    let started = Instant::now();
    let mut child = sprite
        .command("head")
        .args(["-c", &total.to_string(), "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let got = count_to_eof(&mut stdout, 256 << 10)? as u64;
    assert!(child.wait()?.success());
    assert_eq!(got, total);
    Ok(total as f64 / MIB / started.elapsed().as_secs_f64())
}

fn stdin_mib_s(sprite: &Sprite, total: usize) -> std::io::Result<f64> {
    let started = Instant::now();
    let mut child = sprite
        .command("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let buf = vec![7u8; 64 << 10];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            stdin.write_all(&buf[..n])?;
            left -= n;
        }
        Ok(())
    });
    let mut stdout = child.stdout.take().expect("piped");
    let got = count_to_eof(&mut stdout, 256 << 10)?;
    writer.join().expect("writer thread")?;
    assert!(child.wait()?.success());
    assert_eq!(got, total);
    Ok(total as f64 / MIB / started.elapsed().as_secs_f64())
}

fn echo_rtt_us(sprite: &Sprite, rounds: usize) -> std::io::Result<Percentiles> {
    let mut child = sprite
        .command("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut byte = [0u8; 1];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + 50 {
        let started = Instant::now();
        stdin.write_all(b"x")?;
        stdout.read_exact(&mut byte)?;
        // The first rounds warm caches and the scheduler; they are not what users feel.
        if i >= 50 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(stdin);
    child.wait()?;
    Ok(percentiles(samples))
}

/// One keystroke through a terminal and back: `cat` on a raw, non-echoing terminal returns
/// each byte as it comes (what a remote shell's echo costs, without the shell's own work).
fn tty_echo_rtt_us(sprite: &Sprite, rounds: usize) -> std::io::Result<Percentiles> {
    let mut child = sprite
        .command("sh")
        .args(["-c", "stty raw -echo && printf ready && exec cat"])
        .tty(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut ready = [0u8; 5];
    stdout.read_exact(&mut ready)?;
    assert_eq!(&ready, b"ready");
    let mut byte = [0u8; 1];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + 50 {
        let started = Instant::now();
        stdin.write_all(b"x")?;
        stdout.read_exact(&mut byte)?;
        assert_eq!(&byte, b"x");
        if i >= 50 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    // Ctrl-C: the raw terminal passes it to cat as a byte, so end the session by signal.
    child.kill()?;
    let _ = child.wait();
    Ok(percentiles(samples))
}

/// From `Sprite::attach` to the first byte of the session's scrollback in hand, on a
/// detached terminal session that printed a line and sleeps.
fn attach_ms(sprite: &Sprite, rounds: usize) -> std::io::Result<Percentiles> {
    let session = sprite
        .command("sh")
        .args(["-c", "echo scrollback; exec sleep 600"])
        .tty(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let id = session
        .session_id()
        .ok_or_else(|| std::io::Error::other("no session id"))?;
    let mut first = [0u8; 1];
    session.stdout.expect("piped").read_exact(&mut first)?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut attached = sprite.attach(&id)?;
        attached
            .stdout
            .as_mut()
            .expect("piped")
            .read_exact(&mut first)?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(&first, b"s");
        attached.detach();
    }
    sprite
        .kill_session(&id, "KILL", Duration::ZERO)
        .map_err(std::io::Error::from)?;
    Ok(percentiles(samples))
}

/// Streams `total` bytes up through `File::write` and back down through `File::read`.
fn fs_mib_s(sprite: &Sprite, total: usize) -> std::io::Result<(f64, f64)> {
    let fs = sprite.fs();
    let path = format!("/tmp/sprites-bench-{}.bin", std::process::id());
    let buf = vec![5u8; 256 << 10];
    let started = Instant::now();
    let mut file = fs.create(&path)?;
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        file.write_all(&buf[..n])?;
        left -= n;
    }
    file.sync_all()?;
    let upload = total as f64 / MIB / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut file = fs.open(&path)?;
    let got = count_to_eof(&mut file, 256 << 10)?;
    let download = total as f64 / MIB / started.elapsed().as_secs_f64();
    assert_eq!(got, total);
    fs.remove_file(&path)?;
    Ok((upload, download))
}

/// Holds idle keep-alive connections (each made one request, as a pooled client's would)
/// and reads what they cost the server; then measures exec round trips again beside
/// [`IDLE_FOR_EXEC`] of them.
fn idle_figures(sprite: &Sprite, local: &Local) -> Result<IdleFigures, Box<dyn std::error::Error>> {
    // Each connection is a descriptor here too.
    let limit = raise_fd_limit();
    let want = IDLE_FOR_RSS.min(limit.saturating_sub(256) as usize);
    if want < IDLE_FOR_RSS {
        eprintln!(
            "bench: open-file limit {limit}: holding {want} idle connections, not {IDLE_FOR_RSS}"
        );
    }
    let path = format!("/v1/sprites/{}", sprite.name());
    let before = rss_kib(local.pid);
    let mut conns = Vec::with_capacity(want);
    for _ in 0..want {
        match idle_conn(&local.endpoint, &path) {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("bench: stopped at {} idle connections: {e}", conns.len());
                break;
            }
        }
    }
    let held = conns.len();
    let after = rss_kib(local.pid);
    let rss_per_conn_bytes = (after.saturating_sub(before) * 1024) as f64 / held.max(1) as f64;
    conns.truncate(IDLE_FOR_EXEC);
    let exec_held = conns.len();
    let exec = exec_rtt_ms(sprite, 300)?;
    drop(conns);
    Ok(IdleFigures {
        held,
        rss_per_conn_bytes,
        exec_held,
        exec_p50_ms: exec.p50,
    })
}

/// `GET /v1/sprites/{name}` round trips: 5 000 on one keep-alive connection (after 500 to
/// warm up), then 2 000 each on a new connection.
fn api_figures(sprite: &Sprite, local: &Local) -> std::io::Result<ApiFigures> {
    let path = format!("/v1/sprites/{}", sprite.name());
    let mut c = connect_api(&local.endpoint)?;
    let mut samples = Vec::with_capacity(5000);
    for i in 0..5500 {
        let started = Instant::now();
        api_get(&mut c, &local.endpoint, &path)?;
        if i >= 500 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    let keepalive = percentiles(samples);
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let started = Instant::now();
        let mut c = connect_api(&local.endpoint)?;
        api_get(&mut c, &local.endpoint, &path)?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(ApiFigures {
        keepalive,
        new_conn: percentiles(samples),
    })
}

fn connect_api(endpoint: &Endpoint) -> std::io::Result<TcpStream> {
    let c = TcpStream::connect(endpoint.addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}

/// A connection that made one authenticated request (read to its end) and stays open.
fn idle_conn(endpoint: &Endpoint, path: &str) -> std::io::Result<TcpStream> {
    let mut c = connect_api(endpoint)?;
    api_get(&mut c, endpoint, path)?;
    Ok(c)
}

/// One authenticated keep-alive `GET path` on `c`, its 200 response read to the end.
fn api_get(c: &mut TcpStream, endpoint: &Endpoint, path: &str) -> std::io::Result<()> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\r\n",
        endpoint.token
    );
    c.write_all(req.as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(std::io::Error::other(
                head.lines().next().unwrap_or("").to_owned(),
            ));
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            return Ok(());
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit; returns the limit.
fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, exclusively borrowed rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let soft = r.rlim_cur as u64;
    soft
}

/// Resident memory of process `pid` (VmRSS) in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of this process (VmHWM) in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Where a local server listens and the token it wants.
struct Endpoint {
    addr: SocketAddr,
    token: String,
}

/// The API from the environment, or a local server in a child process (and its endpoint).
type Connected = (
    Client,
    Option<std::process::Child>,
    String,
    Option<Endpoint>,
);

fn connect(runtime: Option<&str>) -> Result<Connected, Box<dyn std::error::Error>> {
    if std::env::var_os("SPRITES_TOKEN").is_some() || std::env::var_os("SPRITE_TOKEN").is_some() {
        return Ok((Client::from_env()?, None, "remote".into(), None));
    }
    let dir = std::env::temp_dir().join(format!(
        "sprites-bench-{}-{}",
        std::process::id(),
        runtime.unwrap_or("auto")
    ));
    let mut command = std::process::Command::new(std::env::current_exe()?);
    if let Some(runtime) = runtime {
        command.env(RUNTIME_VAR, runtime);
    }
    let mut child = command
        .env(SERVE_VAR, &dir)
        .stdin(Stdio_::piped())
        .stdout(Stdio_::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = lines.next().ok_or("server printed nothing")??;
    let token = lines.next().ok_or("server printed no token")??;
    let runtime = lines.next().ok_or("server printed no runtime")??;
    eprintln!("bench: sprites-local in a child process at {url}");
    let endpoint = Endpoint {
        addr: url
            .strip_prefix("http://")
            .ok_or("server URL is not http://")?
            .parse()?,
        token: token.clone(),
    };
    let client = Client::builder()
        .base_url(url)
        .token(token)
        .http_timeout(Duration::from_secs(60))
        .build()?;
    Ok((client, Some(child), runtime, Some(endpoint)))
}

use std::process::Stdio as Stdio_;

/// Child-process mode: serve, print URL and token, run until stdin closes.
fn serve(dir: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = sprites_local::Server::builder().data_dir(&dir);
    if let Ok(runtime) = std::env::var(RUNTIME_VAR) {
        builder = builder.runtime(runtime.parse()?);
    }
    let server = builder.start()?;
    eprintln!("bench: {}", server.runtime_note());
    println!("{}", server.url());
    println!("{}", server.token());
    println!("{}", server.runtime());
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read_line(&mut String::new());
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
