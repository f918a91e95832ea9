//! Commands over pooled control connections (PROTOCOL.md §8): reuse, failure of a connection
//! mid-command, servers without `/control`, and results identical to direct exec sockets.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use common::relay::Relay;
use sprites::{Client, Stdio};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn upgrades(local: &Local) -> u64 {
    local.server.as_ref().unwrap().control_upgrades()
}

fn direct_client(url: &str) -> Client {
    Client::builder()
        .base_url(url)
        .token("test-token")
        .control_connections(false)
        .build()
        .unwrap()
}

#[test]
fn a_hundred_sequential_commands_reuse_one_control_connection() {
    let local = Local::start();
    let sprite = local.sprite("reuse");
    sprite.connect().unwrap();
    assert_eq!(upgrades(&local), 1, "connect opens one control connection");
    for i in 0..100 {
        let out = sprite.command("echo").arg(i.to_string()).output().unwrap();
        assert_eq!(out.stdout, format!("{i}\n").as_bytes());
        assert!(out.status.success());
    }
    assert_eq!(
        upgrades(&local),
        1,
        "100 sequential commands ran on the warm connection"
    );
}

#[test]
fn a_cold_client_warms_the_pool_with_its_first_command() {
    let local = Local::start();
    let sprite = local.sprite("cold");
    // The first command runs on its own socket while a control connection is dialled; the
    // ones after it find that connection.
    for _ in 0..20 {
        assert!(sprite.command("true").status().unwrap().success());
    }
    let used = upgrades(&local);
    assert!(
        (1..=2).contains(&used),
        "{used} control connections for 20 sequential commands"
    );
}

#[test]
fn concurrent_commands_use_several_connections_and_all_return_to_the_pool() {
    let local = Local::start();
    let sprite = local.sprite("many");
    sprite.connect().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let sprite = sprite.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let out = sprite
                        .command("sh")
                        .args(["-c", &format!("echo {t}-{i}")])
                        .output()
                        .unwrap();
                    assert_eq!(out.stdout, format!("{t}-{i}\n").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let used = upgrades(&local);
    assert!(used <= 9, "{used} control connections for 8 threads");
    // Sequential again: served by the pool, no new connection.
    for _ in 0..10 {
        sprite.command("true").output().unwrap();
    }
    assert_eq!(upgrades(&local), used);
}

/// Runs the same commands over control and over direct sockets and compares what came back.
#[test]
fn results_over_control_are_identical_to_direct_sockets() {
    let local = Local::start();
    let sprite = local.sprite("same");
    sprite.connect().unwrap();
    let direct = direct_client(&local.url()).sprite(sprite.name());
    let scripts = [
        "echo out; echo err >&2; exit 3",
        "printf 'no newline'",
        "for i in $(seq 1 300); do echo out$i; echo err$i >&2; done",
        "head -c 300000 /dev/zero | tr '\\0' x",
        "kill -TERM $$",
        "exit 255",
    ];
    for script in scripts {
        let a = sprite.command("sh").args(["-c", script]).output().unwrap();
        let b = direct.command("sh").args(["-c", script]).output().unwrap();
        assert_eq!(a.status, b.status, "{script}");
        assert_eq!(a.stdout, b.stdout, "{script}");
        assert_eq!(a.stderr, b.stderr, "{script}");
    }
    // stdin: piped, written right after spawn, and a 1 MiB round trip.
    let data = common::pseudo_random(1 << 20, 7);
    for sprite in [&sprite, &direct] {
        let mut child = sprite
            .command("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            out.stdout.len(),
            64 + 4,
            "{:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let sum = |s: &sprites::Sprite| {
        let mut child = s
            .command("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || stdin.write_all(&data).unwrap())
        };
        let mut back = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(child.wait().unwrap().success());
        back
    };
    assert!(sum(&sprite) == data, "cat over control changed the data");
    assert!(
        sum(&direct) == data,
        "cat over a direct socket changed the data"
    );
    // Errors: the same kinds.
    for (a, b) in [
        (
            sprite.command("no-such-program-x").output().unwrap_err(),
            direct.command("no-such-program-x").output().unwrap_err(),
        ),
        (
            sprite
                .command("true")
                .current_dir("/no/such/dir")
                .output()
                .unwrap_err(),
            direct
                .command("true")
                .current_dir("/no/such/dir")
                .output()
                .unwrap_err(),
        ),
    ] {
        assert_eq!(a.kind(), b.kind(), "{a} vs {b}");
        assert_eq!(a.kind(), io::ErrorKind::NotFound, "{a}");
    }
    // Environment, working directory, terminal.
    let env = |s: &sprites::Sprite| {
        s.command("sh")
            .args(["-c", "echo $A $B; pwd"])
            .env("A", "1")
            .env("B", "two words")
            .current_dir("/tmp")
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(env(&sprite), env(&direct));
    let tty = |s: &sprites::Sprite| {
        s.command("sh")
            .args(["-c", "test -t 0 && echo tty; exit 4"])
            .tty(true)
            .output()
            .unwrap()
    };
    let (a, b) = (tty(&sprite), tty(&direct));
    assert_eq!((a.status, &a.stdout), (b.status, &b.stdout));
    assert_eq!(a.status.code(), Some(4));
    // Everything above ran over the one warm connection.
    assert_eq!(upgrades(&local), 1);
}

#[test]
fn signals_and_timeouts_work_over_control() {
    let local = Local::start();
    let sprite = local.sprite("sig");
    sprite.connect().unwrap();
    let mut child = common::spawn_sleeper(&sprite);
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    let err = sprite
        .command("sleep")
        .arg("30")
        .timeout(Duration::from_millis(100))
        .output()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        sprite.command("echo").arg("after").output().unwrap().stdout,
        b"after\n"
    );
    assert_eq!(upgrades(&local), 1);
}

#[test]
fn a_connection_cut_mid_command_fails_that_command_and_the_next_one_works() {
    let local = Local::start();
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    let client = Client::builder()
        .base_url(&relay.url)
        .token("test-token")
        .build()
        .unwrap();
    let sprite = client.sprite(local.sprite("cut").name());
    sprite.connect().unwrap();
    let mut child = sprite
        .command("sh")
        .args(["-c", "echo started; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"started\n");
    assert_eq!(
        upgrades(&local),
        1,
        "the command runs over the control connection"
    );
    let cut = Instant::now();
    relay.cut_all();
    let err = child.wait().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "noticed the cut in {:?}",
        cut.elapsed()
    );
    // The server killed the command with its connection (it was not detachable).
    let deadline = Instant::now() + Duration::from_secs(10);
    while sprite
        .sessions()
        .unwrap()
        .iter()
        .any(|s| s.command.contains("sleep"))
    {
        assert!(
            Instant::now() < deadline,
            "the command outlived its connection"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next commands work (on a new connection once one is dialled).
    for _ in 0..5 {
        assert_eq!(
            sprite.command("echo").arg("ok").output().unwrap().stdout,
            b"ok\n"
        );
    }
}

#[test]
fn idle_connections_closed_by_the_server_are_replaced_without_failing_a_command() {
    let local = Local::start();
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    let client = Client::builder()
        .base_url(&relay.url)
        .token("test-token")
        .build()
        .unwrap();
    let sprite = client.sprite(local.sprite("idle").name());
    sprite.connect().unwrap();
    sprite.command("true").output().unwrap();
    // Every pooled connection (control and HTTP) dies while idle.
    relay.cut_all();
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        assert_eq!(
            sprite.command("echo").arg("fine").output().unwrap().stdout,
            b"fine\n"
        );
    }
}

#[test]
fn output_and_status_on_a_warm_connection_run_on_the_calling_thread() {
    // A small scrollback: output a command makes before its connection is attached must
    // still all arrive (it once went only to the scrollback, which kept the last part).
    let local = Local::start_with(|b| b.scrollback_bytes(64 << 10));
    let sprite = local.sprite("inline");
    sprite.connect().unwrap();
    let caller = std::thread::current().id();
    let readers = Arc::new(Mutex::new(Vec::new()));
    let seen = readers.clone();
    let out = sprite
        .command("sh")
        .args(["-c", "printf out; printf err >&2; exit 5"])
        .on_message(move |_| seen.lock().unwrap().push(std::thread::current().id()))
        .output()
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"out"[..], &b"err"[..])
    );
    assert_eq!(out.status.code(), Some(5));
    let readers = readers.lock().unwrap().clone();
    assert!(!readers.is_empty(), "session_info reached the handler");
    assert!(
        readers.iter().all(|id| *id == caller),
        "the connection was read on the caller's thread"
    );
    let status = sprite
        .command("sh")
        .args(["-c", "exit 3"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    // More output than any socket buffer holds, collected whole.
    let big = sprite
        .command("head")
        .args(["-c", "3000000", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(big.stdout.len(), 3_000_000);
    // A terminal gets no end-of-input frame: 0x04 there would be a typed Ctrl-D, and `read`
    // would see end of input at once instead of waiting out its timeout (status > 128).
    let tty = sprite
        .command("bash")
        .args(["-c", "read -t 1 x; echo rc=$?"])
        .tty(true)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("rc=142"), "{text:?}");
    assert_eq!(
        upgrades(&local),
        1,
        "all of it on the one control connection"
    );
}

#[test]
fn a_quiet_command_on_the_calling_thread_keeps_its_connection_alive() {
    // The caller's thread sends the pings a writer thread would: without them, a server that
    // says nothing for longer than the keepalive limit would look gone.
    let local = Local::start();
    let client = Client::builder()
        .base_url(local.url())
        .token("test-token")
        .keepalive(Duration::from_millis(50), Duration::from_millis(250))
        .build()
        .unwrap();
    let sprite = client.sprite(local.sprite("quiet").name());
    sprite.connect().unwrap();
    let out = sprite
        .command("sh")
        .args(["-c", "sleep 1; echo done"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"done\n");
    assert!(out.status.success());
}

#[test]
fn a_connection_cut_under_output_fails_it_and_the_next_one_works() {
    let local = Local::start();
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    let client = Client::builder()
        .base_url(&relay.url)
        .token("test-token")
        .build()
        .unwrap();
    let sprite = client.sprite(local.sprite("cut-inline").name());
    sprite.connect().unwrap();
    let running = {
        let sprite = sprite.clone();
        std::thread::spawn(move || sprite.command("sleep").arg("30").output())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sprite
        .sessions()
        .unwrap()
        .iter()
        .any(|s| s.command.contains("sleep"))
    {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cut = Instant::now();
    relay.cut_all();
    let err = running.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "noticed in {:?}",
        cut.elapsed()
    );
    assert_eq!(
        sprite.command("echo").arg("ok").output().unwrap().stdout,
        b"ok\n"
    );
}

#[test]
fn a_server_without_control_runs_everything_over_direct_sockets() {
    let local = Local::start_with(|b| b.control(false));
    let server = local.server.as_ref().unwrap();
    let client = &local.client;
    let sprite = client.create_sprite("plain").unwrap();
    sprite.connect().unwrap();
    for i in 0..10 {
        let out = sprite
            .command("sh")
            .args(["-c", &format!("cat; echo {i} >&2; exit {i}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(b"in")?;
                child.wait_with_output()
            })
            .unwrap();
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, format!("{i}\n").as_bytes());
        assert_eq!(out.status.code(), Some(i));
    }
    sprite.fs().write("/tmp/x-control-test", b"data").unwrap();
    assert_eq!(sprite.fs().read("/tmp/x-control-test").unwrap(), b"data");
    let _ = std::fs::remove_file("/tmp/x-control-test");
    assert_eq!(server.control_upgrades(), 0);
}

#[test]
fn the_builder_opts_out() {
    let local = Local::start();
    let sprite = local.sprite("optout");
    let direct = direct_client(&local.url()).sprite(sprite.name());
    direct.connect().unwrap();
    for _ in 0..5 {
        assert!(direct.command("true").status().unwrap().success());
    }
    assert_eq!(upgrades(&local), 0);
}

#[test]
fn connecting_to_a_sprite_before_it_exists_does_not_give_up_on_control() {
    let local = Local::start();
    let sprite = local.client.sprite("later");
    // 404 sprite_not_found: an error, and not "this server has no control connections".
    let err = sprite.connect().unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(404), "{err}");
    local.client.create_sprite("later").unwrap();
    sprite.connect().unwrap();
    assert_eq!(
        sprite.command("echo").arg("x").output().unwrap().stdout,
        b"x\n"
    );
    assert_eq!(upgrades(&local), 1);
}

#[test]
fn port_events_and_terminal_resizes_reach_a_command_over_control() {
    use std::io::BufRead;
    let local = Local::start();
    let sprite = local.sprite("ctlports");
    sprite.connect().unwrap();
    let script = "import socket,sys\n\
                  s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
                  print(s.getsockname()[1], flush=True)\n\
                  sys.stdin.readline(); s.close(); sys.stdin.readline()\n";
    let mut child = sprite
        .command("python3")
        .args(["-c", script])
        .port_events(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let events = child.port_events().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = |kind: sprites::PortEventKind| loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {kind:?} for port {port}");
        if let Ok(event) = events.recv_timeout(left)
            && event.port == port
            && event.kind == kind
        {
            return event;
        }
    };
    next(sprites::PortEventKind::Opened);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"close\n").unwrap();
    next(sprites::PortEventKind::Closed);
    stdin.write_all(b"end\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());

    // A terminal resized while it runs (a text resize frame, as on an exec socket).
    let mut child = sprite
        .command("sh")
        .args(["-c", "read x; stty size"])
        .tty(true)
        .tty_size(24, 80)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.resize(33, 111).unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\r").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("33 111"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        upgrades(&local),
        1,
        "both ran over the one control connection"
    );
}

#[test]
fn connect_opens_one_control_and_one_http_connection_that_later_calls_reuse() {
    let local = Local::start();
    let relay = Relay::start(local.server.as_ref().unwrap().addr());
    let client = Client::builder()
        .base_url(&relay.url)
        .token("test-token")
        .build()
        .unwrap();
    let sprite = client.sprite(local.sprite("reuse-http").name());
    sprite.connect().unwrap();
    let opened = || relay.open();
    assert_eq!(opened(), 2, "a control connection and an HTTP connection");
    for _ in 0..3 {
        assert_eq!(
            sprite.command("echo").arg("x").output().unwrap().stdout,
            b"x\n"
        );
        sprite.info().unwrap();
        sprite.fs().write("/tmp/reuse-http-test", b"x").unwrap();
        sprite.fs().metadata("/tmp/reuse-http-test").unwrap();
    }
    let _ = sprite.fs().remove_file("/tmp/reuse-http-test");
    assert_eq!(opened(), 2, "every later call reused them");
}
