//! Resource hygiene: after execs end (normally, by disconnect, or stalled by a client that
//! doesn't read), the server holds no extra threads, fds, zombies or memory.
//! One test in its own binary so the process-wide counts are not disturbed by other tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sprites_local::Server;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A TcpStream that retries EINTR. In a process that spawns children (this server does),
/// glibc's posix_spawn can leave a SIGCHLD pending that wakes an unrelated thread, and a
/// blocking socket read with a timeout then fails with EINTR instead of restarting.
/// tungstenite does not retry it, so the test client wraps its socket in this.
struct Retry(TcpStream);

impl Read for Retry {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for Retry {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

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

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(addr: std::net::SocketAddr, query: &str) -> tungstenite::WebSocket<Retry> {
    let url = format!("ws://{addr}/v1/sprites/box/exec?{query}");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer secret".parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    tungstenite::client::client(req, Retry(stream)).unwrap().0
}

fn run_to_exit(ws: &mut tungstenite::WebSocket<Retry>) -> u8 {
    loop {
        if let Message::Binary(b) = ws.read().unwrap() {
            if b.first() == Some(&3) {
                let _ = ws.close(None);
                while ws.read().is_ok() {}
                return b[1];
            }
        }
    }
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
    run_to_exit(&mut connect(addr, "cmd=true"));
    // Harness, test, accept and (sandbox runtime) the sprite agent's reader thread.
    wait_until("warm-up connection gone", || count("/proc/self/task") <= 4);

    let threads = count("/proc/self/task");
    let fds = count("/proc/self/fd");

    // Normal completions, with stdin.
    for _ in 0..30 {
        let mut ws = connect(
            addr,
            "cmd=sh&cmd=-c&cmd=cat%3B+echo+done+%3E%262&stdin=true",
        );
        ws.send(Message::Binary(vec![0, b'x'].into())).unwrap();
        ws.send(Message::Binary(vec![4].into())).unwrap();
        assert_eq!(run_to_exit(&mut ws), 0);
    }
    // Disconnects while running (with stdin open).
    let socks: Vec<_> = (0..30)
        .map(|_| {
            let mut ws = connect(addr, "cmd=sleep&cmd=100&stdin=true");
            let _ = ws.read().unwrap(); // session_info
            ws
        })
        .collect();
    drop(socks);

    // A client that stops reading a fast producer: memory must stay flat.
    let mut ws = connect(addr, "cmd=head&cmd=-c&cmd=4000000000&cmd=%2Fdev%2Fzero");
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
