//! Filesystem calls over pooled control connections (PROTOCOL.md §8.5): the same results and
//! the same typed errors as over HTTP, large transfers on HTTP, servers without `/control`,
//! and a connection that dies mid-call.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, pseudo_random};
use sprites::fs::{Filesystem, Permissions};
use sprites::{Client, Sprite};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const OPS: [&str; 7] = [
    "fs.read",
    "fs.write",
    "fs.list",
    "fs.delete",
    "fs.rename",
    "fs.copy",
    "fs.chmod",
];

/// The `fs.*` ops the server has served over control, in `OPS` order.
fn served(local: &Local) -> [u64; 7] {
    let server = local.server.as_ref().unwrap();
    OPS.map(|op| server.control_fs_ops(op))
}

fn client(url: &str, control: bool) -> Client {
    Client::builder()
        .base_url(url)
        .token("test-token")
        .control_connections(control)
        .build()
        .unwrap()
}

/// The sprite's home directory (the host runtime's is the host's).
fn home(sprite: &Sprite) -> String {
    let out = sprite
        .command("sh")
        .args(["-c", "printf %s \"$HOME\""])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh directory under the sprite's home, as a filesystem rooted there.
fn scratch(sprite: &Sprite, home: &str, name: &str) -> Filesystem {
    sprite.fs_at(home).create_dir(name).unwrap();
    sprite.fs_at(format!("{home}/{name}"))
}

/// What a call came to: its value, or its error's kind, API status and code (messages carry
/// paths).
fn outcome<T: std::fmt::Debug>(result: io::Result<T>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(err) => {
            let api = sprites::Error::from_io(&err)
                .and_then(sprites::Error::api)
                .map(|api| (api.status, api.code.clone()));
            format!("err {:?} {api:?}", err.kind())
        }
    }
}

/// Every filesystem call, with relative paths only, each result written down.
fn script(fs: &Filesystem) -> Vec<String> {
    let mut log = Vec::new();
    let mut note = |what: &str, result: String| log.push(format!("{what}: {result}"));
    let meta = |m: sprites::fs::Metadata| {
        (
            m.is_file(),
            m.is_dir(),
            m.is_symlink(),
            m.len(),
            m.permissions().mode() & 0o777,
        )
    };
    note("write", outcome(fs.write("a.txt", b"hello")));
    note("write empty", outcome(fs.write("empty", b"")));
    note(
        "write 1 MiB",
        outcome(fs.write("mib", pseudo_random(1 << 20, 3))),
    );
    note("read", outcome(fs.read("a.txt")));
    note("read empty", outcome(fs.read("empty")));
    note(
        "read 1 MiB",
        outcome(fs.read("mib").map(|d| d == pseudo_random(1 << 20, 3))),
    );
    note("read relative", outcome(fs.read_to_string("./x/../a.txt")));
    note("read missing", outcome(fs.read("missing")));
    note("create_dir", outcome(fs.create_dir("d")));
    note("create_dir again", outcome(fs.create_dir("d")));
    note("create_dir_all", outcome(fs.create_dir_all("d/e/f")));
    note("read a directory", outcome(fs.read("d")));
    note("write into a file", outcome(fs.write("a.txt/x", b"x")));
    note("write missing parent", outcome(fs.write("nope/x", b"x")));
    note("write a directory", outcome(fs.write("d", b"x")));
    note("metadata", outcome(fs.metadata("a.txt").map(meta)));
    note("metadata dir", outcome(fs.metadata("d").map(meta)));
    note(
        "metadata missing",
        outcome(fs.metadata("missing").map(meta)),
    );
    note(
        "metadata through a file",
        outcome(fs.metadata("a.txt/x").map(meta)),
    );
    note("exists", outcome(fs.exists("a.txt")));
    note("exists not", outcome(fs.exists("zzz")));
    note("symlink", outcome(fs.symlink("a.txt", "link")));
    note(
        "symlink_metadata",
        outcome(fs.symlink_metadata("link").map(meta)),
    );
    note("metadata via link", outcome(fs.metadata("link").map(meta)));
    note("read via link", outcome(fs.read("link")));
    let listing = fs.read_dir(".").map(|entries| {
        let mut names: Vec<_> = entries
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (e.file_name(), m.is_dir(), m.is_symlink(), m.len())
            })
            .collect();
        names.sort();
        names
    });
    note("read_dir", outcome(listing));
    note(
        "read_dir of a file",
        outcome(fs.read_dir("a.txt").map(drop)),
    );
    note("copy", outcome(fs.copy("a.txt", "b.txt")));
    note("copy missing", outcome(fs.copy("missing", "c.txt")));
    note("copy a directory", outcome(fs.copy("d", "d2")));
    note("copy_recursive", outcome(fs.copy_recursive("d", "d3")));
    note("read copy", outcome(fs.read("b.txt")));
    note("rename", outcome(fs.rename("b.txt", "d/moved.txt")));
    note("rename missing", outcome(fs.rename("b.txt", "c.txt")));
    note("read renamed", outcome(fs.read("d/moved.txt")));
    note(
        "set_permissions",
        outcome(fs.set_permissions("a.txt", Permissions::from_mode(0o600))),
    );
    note("mode", outcome(fs.metadata("a.txt").map(meta)));
    note(
        "set_permissions missing",
        outcome(fs.set_permissions("missing", Permissions::from_mode(0o600))),
    );
    note(
        "set_permissions_recursive",
        outcome(fs.set_permissions_recursive("d3", Permissions::from_mode(0o750))),
    );
    note("mode recursive", outcome(fs.metadata("d3/e").map(meta)));
    note("remove_file", outcome(fs.remove_file("empty")));
    note("remove_file missing", outcome(fs.remove_file("empty")));
    note("remove_file a directory", outcome(fs.remove_file("d")));
    note("remove_dir not empty", outcome(fs.remove_dir("d")));
    note("remove_dir a file", outcome(fs.remove_dir("a.txt")));
    note("remove_dir empty", outcome(fs.remove_dir("d/e/f")));
    note("remove_dir_all", outcome(fs.remove_dir_all("d")));
    note("exists removed", outcome(fs.exists("d")));
    log
}

#[test]
fn every_call_over_control_gives_what_http_gives() {
    let local = Local::start();
    let sprite = local.sprite("same");
    sprite.connect().unwrap();
    let home = home(&sprite);
    let http = client(&local.url(), false).sprite(sprite.name());

    let before = served(&local);
    let over_http = script(&scratch(&http, &home, "http"));
    assert_eq!(served(&local), before, "the HTTP client used no control op");

    let over_control = script(&scratch(&sprite, &home, "control"));
    let after = served(&local);
    for (i, op) in OPS.iter().enumerate() {
        assert!(after[i] > before[i], "{op} ran over control: {after:?}");
    }
    assert_eq!(
        local.server.as_ref().unwrap().control_upgrades(),
        1,
        "every call used the one warm connection"
    );
    for (a, b) in over_control.iter().zip(&over_http) {
        assert_eq!(a, b);
    }
    assert_eq!(over_control.len(), over_http.len());
    // The script's errors are the typed ones std gives, not just equal.
    for (what, kind) in [
        ("read missing", "NotFound"),
        ("read a directory", "IsADirectory"),
        ("write into a file", "NotADirectory"),
        ("write missing parent", "NotFound"),
        ("rename missing", "NotFound"),
        ("remove_dir not empty", "DirectoryNotEmpty"),
        ("create_dir again", "AlreadyExists"),
    ] {
        let line = over_control
            .iter()
            .find(|l| l.starts_with(&format!("{what}:")))
            .unwrap();
        assert!(line.contains(&format!("err {kind}")), "{line}");
    }
}

#[test]
fn large_transfers_go_over_http_and_stay_exact() {
    let local = Local::start();
    let sprite = local.sprite("large");
    sprite.connect().unwrap();
    let fs = scratch(&sprite, &home(&sprite), "large");
    let write = 1;
    let read = 0;

    // Exactly 1 MiB: over control both ways.
    let mib = pseudo_random(1 << 20, 5);
    let before = served(&local);
    fs.write("mib", &mib).unwrap();
    assert!(fs.read("mib").unwrap() == mib);
    let after = served(&local);
    assert_eq!(
        after[write],
        before[write] + 1,
        "a 1 MiB write over control"
    );
    assert_eq!(after[read], before[read] + 1, "a 1 MiB read over control");

    // One byte more: the write is a PUT; the read asks control for at most 1 MiB + 1 bytes,
    // gets that many, and reads the file again over HTTP.
    let over = pseudo_random((1 << 20) + 1, 6);
    let before = served(&local);
    fs.write("over", &over).unwrap();
    assert_eq!(
        served(&local)[write],
        before[write],
        "the write went over HTTP"
    );
    assert!(fs.read("over").unwrap() == over);
    assert_eq!(served(&local)[read], before[read] + 1);

    // Big: exact, whatever went where.
    let big = pseudo_random(20 << 20, 7);
    fs.write("big", &big).unwrap();
    let back = fs.read("big").unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "20 MiB read back differs");

    // A streamed File stays on HTTP, even when small.
    let before = served(&local);
    let mut file = fs.create("streamed").unwrap();
    file.write_all(b"small").unwrap();
    file.close().unwrap();
    let mut text = String::new();
    fs.open("streamed")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "small");
    let after = served(&local);
    assert_eq!(
        (after[write], after[read]),
        (before[write], before[read]),
        "File's writes and reads stream over HTTP"
    );
}

#[test]
fn a_server_without_control_serves_every_call_over_http() {
    let local = Local::start_with(|b| b.control(false));
    let server = local.server.as_ref().unwrap();
    let sprite = client(&server.url(), true).create_sprite("plain").unwrap();
    sprite.connect().unwrap();
    let home = home(&sprite);
    let over_default = script(&scratch(&sprite, &home, "default"));
    let http = client(&server.url(), false).sprite("plain");
    let over_http = script(&scratch(&http, &home, "http"));
    assert_eq!(over_default, over_http);
    assert_eq!(server.control_upgrades(), 0);
    assert!(OPS.iter().all(|op| server.control_fs_ops(op) == 0));
}

/// A TCP relay in front of the server that can cut a control connection at the moment the
/// server answers a call: the call reached the server (and ran), its answer never arrives.
struct Relay {
    url: String,
    shared: Arc<RelayShared>,
}

#[derive(Default)]
struct RelayShared {
    /// Cut the next control connection on which the client sends and the server answers.
    armed: AtomicBool,
    /// The client sent something on a control connection since arming.
    asked: AtomicBool,
    cuts: AtomicUsize,
    /// Replace the next fs result (a JSON text frame without a `type`) from the server with
    /// text that is not JSON, as a server that answers in another form would.
    mangle: AtomicBool,
    mangled: AtomicUsize,
    /// Every connection, to close them all when the relay goes.
    conns: Mutex<Vec<TcpStream>>,
}

impl Relay {
    fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(RelayShared::default());
        let relay_shared = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    return;
                };
                let shared = relay_shared.clone();
                {
                    let mut conns = shared.conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(server.try_clone().unwrap());
                }
                let control = Arc::new(AtomicBool::new(false));
                let pair = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Client → server: notes control connections and, once armed, a question.
                let (s, c) = (shared.clone(), control.clone());
                let (mut from, mut to) = (client, server);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut first = true;
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        if first {
                            first = false;
                            let head = String::from_utf8_lossy(&buf[..n]);
                            c.store(head.contains("/control "), Ordering::SeqCst);
                        } else if c.load(Ordering::SeqCst) && s.armed.load(Ordering::SeqCst) {
                            s.asked.store(true, Ordering::SeqCst);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
                // Server → client: the answer to an armed question cuts both ways instead;
                // on a control connection, frame by frame (to mangle an answer if asked).
                let (mut from, mut to) = (pair.1, pair.0);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut frames = Frames::default();
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        if control.load(Ordering::SeqCst)
                            && shared.asked.load(Ordering::SeqCst)
                            && shared.armed.swap(false, Ordering::SeqCst)
                        {
                            shared.asked.store(false, Ordering::SeqCst);
                            shared.cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = from.shutdown(Shutdown::Both);
                            let _ = to.shutdown(Shutdown::Both);
                            return;
                        }
                        let out = if control.load(Ordering::SeqCst) {
                            frames.pass(&buf[..n], &shared)
                        } else {
                            buf[..n].to_vec()
                        };
                        if to.write_all(&out).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        });
        Relay { url, shared }
    }

    fn arm(&self) {
        self.shared.asked.store(false, Ordering::SeqCst);
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

/// The server's side of a control connection: its HTTP head, then unmasked frames.
#[derive(Default)]
struct Frames {
    head_done: bool,
    pending: Vec<u8>,
}

impl Frames {
    /// Takes bytes from the server; returns the whole frames (and head) they complete, the
    /// first fs result mangled if the relay is asked to.
    fn pass(&mut self, bytes: &[u8], shared: &RelayShared) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        if !self.head_done {
            let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                return out;
            };
            out.extend(self.pending.drain(..end + 4));
            self.head_done = true;
        }
        loop {
            let p = &self.pending;
            if p.len() < 2 {
                return out;
            }
            let (header, len) = match p[1] & 0x7f {
                126 if p.len() >= 4 => (4, u64::from(u16::from_be_bytes([p[2], p[3]]))),
                127 if p.len() >= 10 => (10, u64::from_be_bytes(p[2..10].try_into().unwrap())),
                126 | 127 => return out,
                small => (2, u64::from(small)),
            };
            let total = header + len as usize;
            if p.len() < total {
                return out;
            }
            let mut frame: Vec<u8> = self.pending.drain(..total).collect();
            let payload = &frame[header..];
            if frame[0] & 0x0f == 1
                && payload.starts_with(b"{")
                && !String::from_utf8_lossy(payload).contains("\"type\"")
                && shared.mangle.swap(false, Ordering::SeqCst)
            {
                frame[header..].fill(b'x');
                shared.mangled.fetch_add(1, Ordering::SeqCst);
            }
            out.extend(frame);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for conn in self.shared.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_connection_killed_mid_call_retries_a_read_fails_a_change_and_the_next_call_works() {
    let local = Local::start();
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    // Keeper pings (which the relay could take for a call) only every minute.
    let client = Client::builder()
        .base_url(&relay.url)
        .token("test-token")
        .keepalive(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(180),
        )
        .build()
        .unwrap();
    let sprite = client.sprite(local.sprite("cut").name());
    let home = home(&local.client.sprite(sprite.name()));
    let fs = sprite.fs_at(&home);
    let check = local.client.sprite(sprite.name()).fs_at(&home);
    sprite.connect().unwrap();
    fs.write("f", b"v1").unwrap();

    // A read (and a stat) ran on the server; the answer was lost: run again over HTTP.
    let reads = served(&local)[0];
    relay.arm();
    assert_eq!(fs.read("f").unwrap(), b"v1");
    assert_eq!(relay.cuts(), 1, "the read's connection was cut");
    assert_eq!(served(&local)[0], reads + 1, "the read reached the server");
    sprite.connect().unwrap();
    relay.arm();
    assert!(fs.metadata("f").unwrap().is_file());
    assert_eq!(relay.cuts(), 2);

    // A rename and a write ran; their answers were lost: an error, not a second run. (A
    // remove lists first, and that list would take the cut.)
    for (i, call) in [
        &(|fs: &Filesystem| fs.rename("f", "g")) as &dyn Fn(&Filesystem) -> io::Result<()>,
        &|fs: &Filesystem| fs.write("h", b"new"),
    ]
    .into_iter()
    .enumerate()
    {
        sprite.connect().unwrap();
        relay.arm();
        let err = call(&fs).unwrap_err();
        assert_eq!(relay.cuts(), 3 + i);
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::BrokenPipe
            ),
            "call {i}: {err} ({:?})",
            err.kind()
        );
    }
    // Each was applied once.
    assert!(!check.exists("f").unwrap());
    assert_eq!(check.read("g").unwrap(), b"v1");
    assert_eq!(check.read("h").unwrap(), b"new");

    // The next calls work, over HTTP and again over control.
    assert_eq!(fs.read("g").unwrap(), b"v1");
    sprite.connect().unwrap();
    let before = served(&local);
    fs.write("g", b"v2").unwrap();
    assert_eq!(fs.read("g").unwrap(), b"v2");
    fs.remove_file("g").unwrap();
    let after = served(&local);
    assert!(after[1] > before[1] && after[0] > before[0] && after[3] > before[3]);
}

#[test]
fn a_server_answering_in_another_form_costs_one_call_and_fs_stays_on_http() {
    let local = Local::start();
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    let client = client(&relay.url, true);
    let sprite = client.sprite(local.sprite("form").name());
    sprite.connect().unwrap();
    let fs = sprite.fs_at(home(&sprite));
    fs.write("f", b"v1").unwrap();
    let upgrades = local.server.as_ref().unwrap().control_upgrades();

    // The read's result arrives as text that is not JSON: read again over HTTP.
    relay.shared.mangle.store(true, Ordering::SeqCst);
    let before = served(&local);
    assert_eq!(fs.read("f").unwrap(), b"v1");
    assert_eq!(relay.shared.mangled.load(Ordering::SeqCst), 1);
    assert_eq!(served(&local)[0], before[0] + 1, "tried over control once");

    // Remembered: with a control connection idle again, fs calls use HTTP…
    sprite.connect().unwrap();
    let before = served(&local);
    fs.write("f", b"v2").unwrap();
    assert_eq!(fs.read("f").unwrap(), b"v2");
    assert!(fs.metadata("f").unwrap().is_file());
    fs.remove_file("f").unwrap();
    assert_eq!(served(&local), before);
    // …and commands still use the control connection.
    assert_eq!(
        sprite.command("echo").arg("ok").output().unwrap().stdout,
        b"ok\n"
    );
    assert_eq!(
        local.server.as_ref().unwrap().control_upgrades(),
        upgrades + 1,
        "one new connection (the mangled one was closed), used by the command"
    );
}
