//! Port events through the real client against a real sprites-local: `port_opened` /
//! `port_closed` on an exec session (`Command::port_events`) and the sprite's port watch
//! (`Sprite::watch_ports`). The listeners are python3 one-liners on loopback inside the sprite.

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use sprites::{Child, PortEvent, PortEventKind, PortWatch, Sprite, Stdio};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// How long the server may take to notice a listener.
const NOTICE: Duration = Duration::from_secs(20);

/// A listener on a fresh loopback port that closes its socket on the first line of stdin and
/// exits on the second; returns it, its port and its process id as seen inside the sprite
/// (which port events carry, PROTOCOL.md §6.4).
fn listener(sprite: &Sprite, port_events: bool) -> (Child, u16, u32) {
    let script = "import os,socket,sys\n\
                  s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n\
                  print(s.getsockname()[1], os.getpid(), flush=True)\n\
                  sys.stdin.readline(); s.close()\n\
                  print('closed', flush=True)\n\
                  sys.stdin.readline()\n";
    let mut child = sprite
        .command("python3")
        .args(["-c", script])
        .port_events(port_events)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    // The port and pid; what it prints after is not needed (dropping the pipe discards it).
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read the port");
    let mut words = line
        .split_whitespace()
        .map(|w| w.parse().expect("a number"));
    let (port, pid) = (words.next().expect("a port"), words.next().expect("a pid"));
    (child, u16::try_from(port).expect("a port number"), pid)
}

/// The next event about `port`, skipping others (the sprite may have other listeners).
fn next_for(mut recv: impl FnMut(Duration) -> Option<PortEvent>, port: u16) -> PortEvent {
    let deadline = Instant::now() + NOTICE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no event for port {port} within {NOTICE:?}"
        );
        if let Some(event) = recv(left)
            && event.port == port
        {
            return event;
        }
    }
}

fn watch_next(watch: &mut PortWatch, port: u16) -> PortEvent {
    next_for(
        |left| watch.recv_timeout(left).expect("the watch is open"),
        port,
    )
}

#[test]
fn a_listener_in_a_session_gives_port_opened_then_port_closed_with_its_port_and_pid() {
    let local = Local::start();
    let sprite = local.sprite("ports");
    let (mut child, port, pid) = listener(&sprite, true);
    let events = child.port_events().expect("asked for");
    let recv = |left| events.recv_timeout(left).ok();
    let opened = next_for(recv, port);
    assert_eq!(opened.kind, PortEventKind::Opened);
    assert_eq!(opened.pid, Some(pid), "{opened:?}");
    assert_eq!(opened.ip(), Some([127, 0, 0, 1].into()), "{opened:?}");
    child.stdin.as_mut().unwrap().write_all(b"close\n").unwrap();
    let closed = next_for(|left| events.recv_timeout(left).ok(), port);
    assert_eq!(closed.kind, PortEventKind::Closed);
    assert_eq!(closed.pid, Some(pid), "{closed:?}");
    child.stdin.as_mut().unwrap().write_all(b"exit\n").unwrap();
    assert!(child.wait().unwrap().success());
    // The events end with the command.
    assert!(
        events
            .recv_timeout(Duration::from_secs(5))
            .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Disconnected)
    );
}

#[test]
fn the_port_watch_lists_what_listens_and_sees_every_change() {
    let local = Local::start();
    let sprite = local.sprite("watch");
    // Listening before the watch starts: in its snapshot (once the server has seen it).
    let (mut early, early_port, early_pid) = listener(&sprite, false);
    let deadline = Instant::now() + NOTICE;
    let mut watch = loop {
        let watch = sprite.watch_ports().unwrap();
        if watch.ports().iter().any(|p| p.port == early_port) {
            break watch;
        }
        assert!(
            Instant::now() < deadline,
            "port {early_port} never in a snapshot: {:?}",
            watch.ports()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let listed = watch.ports().iter().find(|p| p.port == early_port).unwrap();
    assert_eq!(
        (listed.kind, listed.pid),
        (PortEventKind::Opened, Some(early_pid))
    );

    // Started after: opened, then closed, from a process the watch did not start.
    let (mut late, late_port, late_pid) = listener(&sprite, false);
    let opened = watch_next(&mut watch, late_port);
    assert_eq!(
        (opened.kind, opened.pid),
        (PortEventKind::Opened, Some(late_pid))
    );
    late.stdin.as_mut().unwrap().write_all(b"close\n").unwrap();
    let closed = watch_next(&mut watch, late_port);
    assert_eq!(
        (closed.kind, closed.pid),
        (PortEventKind::Closed, Some(late_pid))
    );

    for child in [&mut early, &mut late] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let gone = watch_next(&mut watch, early_port);
    assert_eq!(gone.kind, PortEventKind::Closed);
    drop(watch); // closes (1000) and joins its thread
}
