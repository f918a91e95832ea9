//! Helpers shared by the integration tests: temp dirs, raw HTTP, WebSocket exec clients.
//! Each test binary uses only some of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sprites_local::{Runtime, Server, ServerHandle};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Anything a test can reach a server at: a running in-process server or an address.
pub trait Addr {
    fn socket_addr(&self) -> SocketAddr;
}

impl Addr for SocketAddr {
    fn socket_addr(&self) -> SocketAddr {
        *self
    }
}

impl Addr for ServerHandle {
    fn socket_addr(&self) -> SocketAddr {
        self.addr()
    }
}

impl<T: Addr + ?Sized> Addr for &T {
    fn socket_addr(&self) -> SocketAddr {
        (**self).socket_addr()
    }
}

/// A TcpStream that retries EINTR. In a process that spawns children (this server does),
/// glibc's posix_spawn can leave a SIGCHLD pending that wakes an unrelated thread, and a
/// blocking socket read with a timeout then fails with EINTR instead of restarting.
/// tungstenite does not retry it, so the test client wraps its socket in this.
#[derive(Debug)]
pub struct Retry(pub TcpStream);

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

/// Twelve random hex digits.
pub fn random_hex() -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("sprites-local-test-{tag}-{}", random_hex()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    /// An absolute path inside, as the API wants it.
    pub fn p(&self, rel: &str) -> String {
        self.0.join(rel).to_str().unwrap().to_owned()
    }

    /// The sorted names in the directory `rel` inside.
    pub fn names(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP response: the head as sent (status line included), its parsed parts and the body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// Parses a response head (without its final blank line); the body is left empty.
    pub fn from_head(head: String) -> Resp {
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        Resp {
            status,
            head,
            headers,
            body: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `raw` on a new connection and reads the response until the server closes.
pub fn http_raw(s: impl Addr, raw: &[u8]) -> Resp {
    let mut c = TcpStream::connect(s.socket_addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(raw).unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let mut resp = Resp::from_head(String::from_utf8_lossy(&all[..split]).into_owned());
    resp.body = all[split + 4..].to_vec();
    if resp
        .head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        resp.body = dechunk(&resp.body);
    }
    resp
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let i = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

/// One request with the token, on its own connection.
pub fn http(s: impl Addr, method: &str, path: &str, body: Option<&str>) -> Resp {
    let body = body.unwrap_or("");
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_raw(s, raw.as_bytes())
}

/// Creates sprite `name`, asserting 201.
pub fn create(s: impl Addr, name: &str) {
    let r = http(
        s,
        "POST",
        "/v1/sprites",
        Some(&format!(r#"{{"name":"{name}"}}"#)),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

/// Percent-encodes a query value (keeping `/` readable).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn write_target(sprite: &str, path: &str, extra: &str) -> String {
    format!("/v1/sprites/{sprite}/fs/write?path={}{extra}", enc(path))
}

pub fn read_target(sprite: &str, path: &str) -> String {
    format!("/v1/sprites/{sprite}/fs/read?path={}", enc(path))
}

pub type Ws = WebSocket<Retry>;

pub fn connect(s: impl Addr, sprite: &str, query: &str) -> Ws {
    try_connect(s, sprite, query).unwrap_or_else(|e| panic!("upgrade failed: {e}"))
}

/// Opens an exec WebSocket, asserting the server's capability headers on success.
pub fn try_connect(s: impl Addr, sprite: &str, query: &str) -> Result<Ws, String> {
    let addr = s.socket_addr();
    let url = format!("ws://{addr}/v1/sprites/{sprite}/exec?{query}");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer secret".parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    match tungstenite::client::client(req, Retry(stream)) {
        Ok((ws, resp)) => {
            assert_eq!(resp.headers()["x-sprite-capabilities"], "signal");
            assert_eq!(resp.headers()["sprite-version"], "0.1.0");
            Ok(ws)
        }
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Default)]
pub struct Run {
    pub session_id: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<u8>,
    pub order_ok: bool,
}

/// Reads the session_info, then output until the exit frame; closes.
pub fn collect(ws: &mut Ws) -> Run {
    let mut run = Run {
        order_ok: true,
        ..Run::default()
    };
    match ws.read().unwrap() {
        Message::Text(t) => {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "session_info");
            assert_eq!(v["tty"], false);
            run.session_id = v["session_id"].as_str().unwrap().to_owned();
        }
        other => panic!("expected session_info first, got {other:?}"),
    }
    loop {
        match ws.read().unwrap() {
            Message::Binary(b) => match b.first() {
                Some(1) => run.stdout.extend_from_slice(&b[1..]),
                Some(2) => run.stderr.extend_from_slice(&b[1..]),
                Some(3) => {
                    assert_eq!(b.len(), 2);
                    run.exit = Some(b[1]);
                    break;
                }
                _ => run.order_ok = false,
            },
            Message::Ping(_) | Message::Pong(_) => {}
            // A command that listens on a port is told so (tests/ports.rs checks these).
            Message::Text(t) if t.starts_with(r#"{"type":"port_"#) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let _ = ws.close(None);
    // Drain until the server's close reply (or EOF).
    while ws.read().is_ok() {}
    run
}

/// Reads the first message, which must be the session_info text, and returns its session id.
pub fn session_id(ws: &mut Ws) -> String {
    match ws.read().unwrap() {
        Message::Text(t) => {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            v["session_id"].as_str().unwrap().to_owned()
        }
        other => panic!("{other:?}"),
    }
}

/// An exec of `argv` in `sprite`, found on the host: the open WebSocket, the session id (the
/// pid inside the sprite) and the leader's host pid, for tests that look at the process from
/// the host's `/proc`. The exec carries an environment variable no other process has, which
/// is how the host pid is found (session ids repeat across sprites).
pub fn connect_on_host(s: impl Addr, sprite: &str, argv: &[&str]) -> (Ws, String, u32) {
    let mark = test_mark();
    let mut ws = connect(s, sprite, &format!("{}&env={}", q(argv), enc(&mark)));
    let id = session_id(&mut ws);
    // The process has exec'd by the time the session starts, so its environment is there.
    let host_pid = marked_process(&mark).unwrap_or_else(|| panic!("no host process has {mark}"));
    // The session id is the leader's pid as the sprite sees it: NSpid's last field.
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some(id.as_str()),
        "{nspid}"
    );
    (ws, id, host_pid)
}

/// An environment variable (`NAME=value`) to give one exec, by which [`marked_process`] finds
/// it on the host.
pub fn test_mark() -> String {
    format!("SPRITES_TEST_MARK={}", random_hex())
}

/// The host pid of the live process whose environment holds `mark`, if there is one.
pub fn marked_process(mark: &str) -> Option<u32> {
    let needle = format!("{mark}\0");
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let marked = environ
            .windows(needle.len())
            .any(|w| w == needle.as_bytes());
        (marked && !process_gone(pid as i32)).then_some(pid)
    })
}

/// Whether a root process here may give a child cgroup the `cpu` controller: a cgroup v2
/// directory (its own) offering `cpu` and `memory`, or a writable cgroup v1 `cpu` hierarchy at
/// its own place in it (how containers often mount them). Where it may, sandboxed sprites must
/// get a cgroup: tests that skip without one check this first, so a server that stopped
/// making them cannot pass by skipping.
pub fn cpu_cgroup_possible() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_path = |controller: Option<&str>| {
        own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let wanted = match controller {
                None => controllers.is_empty(),
                Some(c) => controllers.split(',').any(|x| x == c),
            };
            wanted.then(|| path.to_owned())
        })
    };
    mountinfo.lines().any(|line| {
        let Some((pre, post)) = line.split_once(" - ") else {
            return false;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let mut post = post.split(' ');
        let (fstype, options) = (post.next(), post.nth(1).unwrap_or(""));
        let (root, mount) = (Path::new(pre[3]), Path::new(pre[4]));
        let below = |path: String| {
            Path::new(&path)
                .strip_prefix(root)
                .ok()
                .map(|rel| mount.join(rel))
        };
        match fstype {
            Some("cgroup2") => own_path(None).and_then(below).is_some_and(|dir| {
                let c = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                ["cpu", "memory"]
                    .iter()
                    .all(|w| c.split_whitespace().any(|x| x == *w))
            }),
            Some("cgroup") if options.split(',').any(|o| o == "cpu") => {
                own_path(Some("cpu")).and_then(below).is_some_and(|dir| {
                    let probe = dir.join(format!("sprites-local-test-probe-{}", random_hex()));
                    std::fs::create_dir(&probe).is_ok() && std::fs::remove_dir(&probe).is_ok()
                })
            }
            _ => false,
        }
    })
}

/// Reads (skipping everything else) until the exit frame; returns the exit code.
pub fn exit_code(ws: &mut Ws) -> u8 {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) if b.first() == Some(&3) => return b[1],
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// The exec query for argv `args`.
pub fn q(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            let enc: String = a
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("cmd={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead; it only waits for its (possibly absent) reaper.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `sprites-local` binary in its own process (host runtime, token `secret`), so its
/// memory, threads and limits can be measured without the test's.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// What it printed at startup, up to its `connections:` line.
    pub startup: Vec<String>,
    _dir: TempDir,
}

impl Addr for ServerProcess {
    fn socket_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl ServerProcess {
    pub fn start() -> ServerProcess {
        ServerProcess::start_with(&[], None)
    }

    /// With extra command-line `args`, and (if given) this soft open-file limit at exec,
    /// as a shell's `ulimit -Sn` would leave it (the hard limit stays as it is).
    pub fn start_with(args: &[&str], soft_nofile: Option<u64>) -> ServerProcess {
        ServerProcess::start_limited(args, soft_nofile, None)
    }

    /// As [`ServerProcess::start_with`], also lowering the hard open-file limit (which the
    /// server cannot raise again) if `hard_nofile` is given.
    pub fn start_limited(
        args: &[&str],
        soft_nofile: Option<u64>,
        hard_nofile: Option<u64>,
    ) -> ServerProcess {
        let dir = TempDir::new("proc");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sprites-local"));
        cmd.args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--token",
            "secret",
            "--runtime",
            "host",
        ])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if soft_nofile.is_some() || hard_nofile.is_some() {
            use std::os::unix::process::CommandExt;
            // SAFETY: getrlimit/setrlimit are async-signal-safe and touch only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let mut r = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if let Some(hard) = hard_nofile {
                        r.rlim_max = hard.min(r.rlim_max) as libc::rlim_t;
                    }
                    r.rlim_cur = soft_nofile.unwrap_or(r.rlim_max).min(r.rlim_max) as libc::rlim_t;
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        // A thread reads its output (keeping the pipe open), so waiting for a line is
        // bounded even if the server never prints it.
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let addr = first
            .trim()
            .strip_prefix("sprites-local listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        let mut startup = vec![first];
        while !startup
            .last()
            .is_some_and(|l| l.starts_with("connections:"))
        {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(line) => startup.push(line),
                Err(_) => break,
            }
        }
        ServerProcess {
            child,
            addr,
            startup,
            _dir: dir,
        }
    }

    fn status_field(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        (self.status_field("VmRSS:"), self.status_field("VmHWM:"))
    }

    /// `VmRSS` in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Threads of the server process.
    pub fn threads(&self) -> u64 {
        self.status_field("Threads:")
    }

    /// Open descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// The soft and hard open-file limits of the server process, as `/proc` shows them.
    pub fn nofile_limits(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut f = line["Max open files".len()..].split_whitespace();
        (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's soft open-file limit to its hard limit; returns the new limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = r.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
    #[allow(clippy::unnecessary_cast)]
    let soft = r.rlim_cur as u64;
    soft
}

// ---- Sandboxed servers (tests/sandbox.rs, tests/confinement.rs) ----

/// A sandboxed server on a fresh data dir, or None (reason printed) where the machine
/// cannot run sandboxes.
pub fn start(tag: &str) -> Option<(ServerHandle, TempDir)> {
    let dir = TempDir::new(tag);
    start_in(&dir.0).map(|s| (s, dir))
}

pub fn start_in(dir: &Path) -> Option<ServerHandle> {
    match Server::builder()
        .token("secret")
        .data_dir(dir)
        .runtime(Runtime::Sandbox)
        .start()
    {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

/// Runs `sh -c script` in `sprite`; returns (stdout, stderr, exit code).
pub fn sh(s: SocketAddr, sprite: &str, script: &str) -> (String, String, u8) {
    let mut ws = connect(s, sprite, &q(&["sh", "-c", script]));
    let run = collect(&mut ws);
    (
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
        run.exit.unwrap(),
    )
}

/// Like `sh` but asserts exit 0 and returns trimmed stdout.
pub fn ok(s: SocketAddr, sprite: &str, script: &str) -> String {
    let (out, err, code) = sh(s, sprite, script);
    assert_eq!(code, 0, "{script}: stdout {out:?} stderr {err:?}");
    out.trim().to_owned()
}

/// The address in the CLI's first line, `sprites-local listening on http://ADDR`.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("sprites-local listening on http://")?
        .parse()
        .ok()
}

/// Spawns `cmd` (a `sprites-local` CLI, with its stdout piped) and waits, at most
/// [`TIMEOUT`], for its first line: the address it listens on.
pub fn spawn_listening(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sprites-local");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
    });
    let first = rx.recv_timeout(TIMEOUT).unwrap_or_default();
    match listening_addr(&first) {
        Some(a) => (child, a),
        None => {
            let _ = child.kill();
            panic!("unexpected first line {first:?}");
        }
    }
}

/// The CLI as an unprivileged user (uid/gid 65534), with its stdout lines.
pub struct Unprivileged {
    pub child: std::process::Child,
    pub lines: Vec<String>,
}

impl Unprivileged {
    pub fn start(data: &Path, extra: &[&str]) -> Unprivileged {
        use std::io::BufRead;
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_sprites-local"))
            .args(["--addr", "127.0.0.1:0", "--token", "secret", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("HOME", data)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("setpriv");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        // The server prints two lines (listening, runtime) or an error and exits; the
        // read ends at either (EOF), so it is bounded by the server's startup.
        for _ in 0..2 {
            let mut l = String::new();
            if out.read_line(&mut l).unwrap_or(0) == 0 {
                break;
            }
            lines.push(l.trim_end().to_owned());
        }
        Unprivileged { child, lines }
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        listening_addr(self.lines.first()?)
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies programs and the libraries `ldd` says they need into the base at `dir`.
pub fn add_tools(dir: &Path, tools: &[&str]) {
    let mut files: Vec<PathBuf> = tools.iter().map(PathBuf::from).collect();
    for t in tools {
        let ldd = std::process::Command::new("ldd").arg(t).output().unwrap();
        for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
    }
    for f in files {
        let real = f.canonicalize().unwrap();
        let to = dir.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&real, &to).unwrap();
    }
}

/// A minimal root filesystem: dash, a few coreutils and their libraries.
pub fn tiny_base(dir: &Path) {
    add_tools(
        dir,
        &[
            "/bin/dash",
            "/usr/bin/id",
            "/bin/cat",
            "/bin/ls",
            "/usr/bin/stat",
        ],
    );
    std::os::unix::fs::symlink("dash", dir.join("bin/sh")).unwrap();
    for d in ["etc", "proc", "dev", "tmp", "home", "usr/bin"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(dir.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    std::fs::set_permissions(
        dir.join("etc/shadow"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}
