//! Connection-level enforcement of a default-deny network policy, inside a sprite's own
//! network namespace: an nftables table `inet sprite_policy` whose output chain lets out
//! loopback traffic and traffic to the addresses in two sets, and rejects the rest. The
//! sets hold the addresses the sprite's resolver returned for allowed names (with a
//! timeout), so a program that connects to a raw address no allowed name resolved to is
//! refused (ICMP "administratively prohibited": the connect fails at once, `EHOSTUNREACH`).
//! The accept and reject rules count packets, for whoever looks (`nft list table inet
//! sprite_policy` in the sprite's namespace; the tests do).
//!
//! The rules are loaded by the host's `nft`, run through the host's `nsenter` in the
//! sprite's namespace (a handle on it is passed as fd 3): nothing of the sprite's runs, and
//! the namespace belongs to the host, so root inside the sprite cannot change the table.

use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

const TABLE: &str = "sprite_policy";
/// The fd number the namespace handle gets in `nsenter`.
const NETNS_FD: i32 = 3;
/// How long `nft` may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// The firewall of one sprite's network namespace.
pub(crate) struct Firewall {
    netns: OwnedFd,
}

impl Firewall {
    /// A firewall for the namespace `netns` (a `/proc/.../ns/net` handle).
    pub fn new(netns: OwnedFd) -> Firewall {
        Firewall { netns }
    }

    /// Default deny (`deny = true`): the table with empty sets; else no table at all.
    pub fn reset(&self, deny: bool) -> io::Result<()> {
        // `add` then `delete` removes a table whether or not it existed, in one transaction.
        let mut script = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
        if deny {
            script.push_str(&format!(
                "add table inet {TABLE}
add set inet {TABLE} allowed4 {{ type ipv4_addr; flags timeout; }}
add set inet {TABLE} allowed6 {{ type ipv6_addr; flags timeout; }}
add chain inet {TABLE} output {{ type filter hook output priority filter; policy accept; }}
add rule inet {TABLE} output oifname \"lo\" accept
add rule inet {TABLE} output ip daddr @allowed4 counter accept
add rule inet {TABLE} output ip6 daddr @allowed6 counter accept
add rule inet {TABLE} output counter reject with icmpx type admin-prohibited
"
            ));
        }
        self.nft(&script)
    }

    /// Lets connections to `addrs` out, each for its time (seconds).
    pub fn allow(&self, addrs: &[(IpAddr, u64)]) -> io::Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        for (ip, secs) in addrs {
            let set = if ip.is_ipv4() { "allowed4" } else { "allowed6" };
            // `add element` fails on an element already there; delete-then-add refreshes
            // its timeout (a missing element's delete would fail the transaction, so add
            // it first).
            script.push_str(&format!(
                "add element inet {TABLE} {set} {{ {ip} timeout {secs}s }}
delete element inet {TABLE} {set} {{ {ip} }}
add element inet {TABLE} {set} {{ {ip} timeout {secs}s }}
"
            ));
        }
        self.nft(&script)
    }

    fn nft(&self, script: &str) -> io::Result<()> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/self/fd/{NETNS_FD}"))
            .args(["nft", "-f", "-"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        crate::sys::process::pass_fd(&mut cmd, self.netns.as_raw_fd(), NETNS_FD);
        let mut child = cmd.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let out = wait_bounded(child)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "nft: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// Waits for `child` at most [`NFT_TIMEOUT`]; kills it after that.
fn wait_bounded(child: std::process::Child) -> io::Result<std::process::Output> {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("sprites-nft".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })?;
    match rx.recv_timeout(NFT_TIMEOUT) {
        Ok(out) => out,
        Err(_) => {
            // Unreaped until the waiter thread reaps it: the pid cannot be recycled yet.
            let _ = crate::sys::process::kill(pid, libc::SIGKILL);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "nft did not finish in time",
            ))
        }
    }
}
