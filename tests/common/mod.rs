//! Shared test setup: a real `sprites-local` (in-process or as a child process), a real client,
//! real sockets on loopback.

#![allow(dead_code)]

pub mod echo;
pub mod hostile;
pub mod relay;
pub mod tls;

use sprites::{Client, Sprite};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child as Process, Command as Process_, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("sprites-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every test is bounded: a test still running after this long aborts the test binary, so a
/// hang is a loud failure rather than a stuck CI job.
pub const TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Aborts the process if not dropped within [`TEST_LIMIT`].
pub struct Watchdog(Option<crossbeam_channel::Sender<()>>);

impl Watchdog {
    pub fn arm(what: &str) -> Watchdog {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let what = what.to_owned();
        std::thread::spawn(move || {
            if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(TEST_LIMIT) {
                eprintln!("{what}: still running after {TEST_LIMIT:?}; aborting the test binary");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Disconnecting wakes the watchdog thread, which then exits.
        self.0.take();
    }
}

/// The runtime test servers use: `SPRITES_TEST_RUNTIME=sandbox|host|auto` (default `host`),
/// so the same end-to-end tests can run against a sandboxed server
/// (`SPRITES_TEST_RUNTIME=sandbox cargo test --test fs --test exec`).
pub fn test_runtime() -> sprites_local::Runtime {
    match std::env::var("SPRITES_TEST_RUNTIME") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|e| panic!("SPRITES_TEST_RUNTIME: {e}")),
        _ => sprites_local::Runtime::Host,
    }
}

/// An in-process server with a client pointed at it.
pub struct Local {
    pub client: Client,
    pub server: Option<sprites_local::ServerHandle>,
    pub dir: TempDir,
    _watchdog: Watchdog,
}

impl Local {
    pub fn start() -> Local {
        Local::start_with(|builder| builder)
    }

    /// A server configured by `configure` beyond the test defaults (token, data dir, runtime).
    pub fn start_with(
        configure: impl FnOnce(sprites_local::ServerBuilder) -> sprites_local::ServerBuilder,
    ) -> Local {
        let dir = TempDir::new("srv");
        let server = configure(
            sprites_local::Server::builder()
                .addr("127.0.0.1:0")
                .token("test-token")
                .data_dir(dir.path().join("data"))
                .runtime(test_runtime()),
        )
        .start()
        .expect("start sprites-local");
        let client = Client::builder()
            .base_url(server.url())
            .token(server.token())
            .build()
            .expect("client");
        let name = std::thread::current().name().unwrap_or("test").to_owned();
        Local {
            client,
            server: Some(server),
            dir,
            _watchdog: Watchdog::arm(&name),
        }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("server running").url()
    }

    /// Creates a sprite with a unique name.
    pub fn sprite(&self, tag: &str) -> Sprite {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{tag}-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        self.client.create_sprite(&name).expect("create sprite")
    }
}

/// Environment variable that turns a test binary into a server process (see [`ServerProcess`]).
pub const SERVE_DIR_VAR: &str = "SPRITES_TEST_SERVE_DIR";

/// The body of the `#[ignore]`d entry test that [`ServerProcess::start`] runs: when the env var
/// is set, serve until killed.
pub fn serve_if_asked() {
    let Ok(dir) = std::env::var(SERVE_DIR_VAR) else {
        return;
    };
    let server = sprites_local::Server::builder()
        .addr("127.0.0.1:0")
        .token("proc-token")
        .data_dir(dir)
        .runtime(test_runtime())
        .start()
        .expect("start sprites-local");
    println!("\nSERVER_URL={}", server.url());
    // Serve until the parent kills us (or closes our stdin).
    let _ = std::io::stdin().read_line(&mut String::new());
    drop(server);
}

/// `sprites-local` in a child process, so a test can kill it, or count the client's own threads
/// and descriptors without the server's.
pub struct ServerProcess {
    pub process: Process,
    pub url: String,
    pub client: Client,
    pub dir: TempDir,
    _watchdog: Watchdog,
}

impl ServerProcess {
    /// Re-runs this test binary with only the `entry` test selected and [`SERVE_DIR_VAR`] set.
    pub fn start(entry: &str) -> ServerProcess {
        let watchdog = Watchdog::arm(std::thread::current().name().unwrap_or("test"));
        let dir = TempDir::new("proc");
        let mut process = Process_::new(std::env::current_exe().expect("current exe"))
            .args([
                entry,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SERVE_DIR_VAR, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server process");
        let stdout = process.stdout.take().expect("stdout");
        let mut url = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read server stdout");
            // libtest may print "test name ... " on the same line first.
            if let Some((_, found)) = line.split_once("SERVER_URL=") {
                url = Some(found.trim().to_owned());
                break;
            }
        }
        let url = url.expect("server process printed no URL");
        let client = Client::builder()
            .base_url(&url)
            .token("proc-token")
            .build()
            .expect("client");
        ServerProcess {
            process,
            url,
            client,
            dir,
            _watchdog: watchdog,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command that runs until it is killed (`sleep 60`, stdin null): the subject of kill,
/// signal, session-id, restart and disconnect tests. Returned once it runs: over a warm
/// control connection `spawn` returns before the server has started the command, so this
/// waits for the line it prints before it becomes `sleep`.
pub fn spawn_sleeper(sprite: &Sprite) -> sprites::Child {
    let mut child = sprite
        .command("sh")
        .args(["-c", "echo up; exec sleep 60"])
        .stdin(sprites::Stdio::null())
        .stdout(sprites::Stdio::piped())
        .spawn()
        .expect("spawn sleep 60");
    let mut up = [0u8; 3];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut up)
        .expect("the sleeper's first line");
    assert_eq!(&up, b"up\n");
    child
}

/// Threads in this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open file descriptors in this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}
