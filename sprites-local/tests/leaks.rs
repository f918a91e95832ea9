//! Resource hygiene: after execs end (normally, by disconnect, or stalled by a client that
//! doesn't read), the server holds no extra threads, fds, zombies or memory.
//! One test in its own binary so the process-wide counts are not disturbed by other tests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use sprites_local::Server;
use tungstenite::Message;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let rest: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            rest.first() == Some(&"Z") && rest.get(1) == Some(&me.as_str())
        })
        .count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits for the exit frame, then closes.
fn run_to_exit(ws: &mut Ws) -> u8 {
    let code = exit_code(ws);
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    code
}

#[test]
fn no_leaks_after_execs() {
    let dir = std::env::temp_dir().join(format!("sprites-local-leaks-{}", std::process::id()));
    let s = Server::builder()
        .token("secret")
        .data_dir(&dir)
        .start()
        .unwrap();
    let addr = s.addr();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"POST /v1/sprites HTTP/1.1\r\nAuthorization: Bearer secret\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"name\":\"box\"}").unwrap();
    let mut o = String::new();
    c.read_to_string(&mut o).unwrap();
    assert!(o.starts_with("HTTP/1.1 201"), "{o}");
    // One warm-up exec so lazily created process-wide state exists before the baseline.
    run_to_exit(&mut connect(addr, "box", "cmd=true"));
    // Harness, test, accept, the lifecycle clock and (sandbox runtime) the sprite agent's
    // reader thread and the sprite's resolver (PROTOCOL.md §13.4).
    wait_until("warm-up connection gone", || count("/proc/self/task") <= 6);

    let threads = count("/proc/self/task");
    let fds = count("/proc/self/fd");

    // Normal completions, with stdin.
    for _ in 0..30 {
        let mut ws = connect(
            addr,
            "box",
            "cmd=sh&cmd=-c&cmd=cat%3B+echo+done+%3E%262&stdin=true",
        );
        ws.send(Message::Binary(vec![0, b'x'].into())).unwrap();
        ws.send(Message::Binary(vec![4].into())).unwrap();
        assert_eq!(run_to_exit(&mut ws), 0);
    }
    // Disconnects while running (with stdin open).
    let socks: Vec<_> = (0..30)
        .map(|_| {
            let mut ws = connect(addr, "box", "cmd=sleep&cmd=100&stdin=true");
            let _ = ws.read().unwrap(); // session_info
            ws
        })
        .collect();
    drop(socks);

    // A client that stops reading a fast producer: memory must stay flat.
    let mut ws = connect(
        addr,
        "box",
        "cmd=head&cmd=-c&cmd=4000000000&cmd=%2Fdev%2Fzero",
    );
    let _ = ws.read().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rss_a = rss_kib();
    std::thread::sleep(Duration::from_millis(1000));
    let rss_b = rss_kib();
    assert!(
        rss_b < rss_a + 8 * 1024,
        "RSS grew from {rss_a} KiB to {rss_b} KiB while the client was stalled"
    );
    drop(ws);

    wait_until("threads back to baseline", || {
        count("/proc/self/task") <= threads
    });
    wait_until("fds back to baseline", || count("/proc/self/fd") <= fds);
    wait_until("no zombies", || zombies() == 0);
    s.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
