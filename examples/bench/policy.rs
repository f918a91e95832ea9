//! The sprite's resolver (PROTOCOL.md §13.4): how long a denied name takes to be refused,
//! beside a UDP round trip on the sprite's own loopback measured in the same run.

use sprites::{NetworkPolicy, NetworkRule, Sprite};

/// Round trips inside the sprite, in microseconds.
pub struct DnsFigures {
    /// A query for a denied name, answered REFUSED by the sprite's resolver: p50.
    pub refused_p50_us: f64,
    /// The same, p99.
    pub refused_p99_us: f64,
    /// The baseline: the same datagram echoed by a UDP server on the sprite's loopback: p50.
    pub echo_p50_us: f64,
}

/// Queries for a name the sprite's network policy denies, sent to its resolver from inside
/// (python3, `rounds` of them), against an echo server in the same script. `None` where the
/// sprite has no resolver of ours (host runtime, no egress) or no python3.
pub fn dns_figures(sprite: &Sprite, runtime: &str, rounds: usize) -> Option<DnsFigures> {
    if runtime != "sandbox" {
        return None;
    }
    sprite
        .update_network_policy(&NetworkPolicy::new([NetworkRule::deny("denied.bench")]))
        .ok()?;
    let script = format!(
        r#"
import socket, threading, time
if "127.0.0.53" not in open("/etc/resolv.conf").read(): raise SystemExit(3)
q = bytes.fromhex("abcd01000001000000000000") + b"\x06denied\x05bench\x00\x00\x01\x00\x01"
e = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); e.bind(("127.0.0.1", 0))
def echo():
    while True:
        d, a = e.recvfrom(512)
        e.sendto(d, a)
threading.Thread(target=echo, daemon=True).start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
def rtts(addr):
    out = []
    for _ in range({rounds}):
        t = time.perf_counter(); s.sendto(q, addr); r = s.recv(512)
        out.append((time.perf_counter() - t) * 1e6)
    return sorted(out), r
refused, r = rtts(("127.0.0.53", 53))
assert r[3] & 15 == 5, r
echoed, _ = rtts(e.getsockname())
n = len(refused)
print(refused[n // 2], refused[n * 99 // 100], echoed[n // 2])
"#
    );
    let out = sprite.command("python3").args(["-c", &script]).output();
    let _ = sprite.update_network_policy(&NetworkPolicy::default());
    let out = out.ok()?;
    if !out.status.success() {
        eprintln!(
            "bench: resolver measurements skipped: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [refused_p50_us, refused_p99_us, echo_p50_us] => Some(DnsFigures {
            refused_p50_us,
            refused_p99_us,
            echo_p50_us,
        }),
        _ => None,
    }
}
