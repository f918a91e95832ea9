//! `examples/console.rs` in a real terminal: tmux runs a shell, the shell runs the console
//! against a sprites-local started here, and the test types keys and reads the screen
//! (`send-keys`, `capture-pane`). Needs `tmux` (Debian package `tmux`); every wait polls the
//! screen with a deadline, and the tmux server (on a private socket in the test's temporary
//! directory) is killed at the end.

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the screen may take to show what the test waits for.
const SHOW: Duration = Duration::from_secs(30);
/// The local shell's prompt (PS1 is this and a space, which capture-pane may trim), distinct
/// from the remote shell's.
const PROMPT: &str = "local$";

/// Builds the console example for this test binary's profile; returns its path.
fn console_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // <target>/<profile>/deps/console-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--quiet", "--example", "console"]);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo.status().expect("run cargo build --example console");
    assert!(status.success(), "building the console example failed");
    profile_dir.join("examples").join("console")
}

/// A tmux server on a private socket (in the test's temporary directory, so nothing is left
/// behind), killed when dropped, with one 120×40 pane.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(shell: &str, dir: &Path) -> Tmux {
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "40",
                shell,
            ])
            .status()
            .expect("tmux is needed: apt-get install tmux");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket);
        command
    }

    fn run(&self, args: &[&str]) {
        let out = self.command().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Types `text` literally, then Enter.
    fn type_line(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
        self.run(&["send-keys", "-t", "t", "Enter"]);
    }

    /// The screen and its history.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-J", "-t", "t", "-S", "-1000"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + SHOW;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {SHOW:?}; the screen shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many local shell prompts the screen shows.
    fn prompts(&self) -> usize {
        self.screen().matches(PROMPT).count()
    }

    /// Waits for a local shell prompt beyond the `seen` ones: the program the shell ran has
    /// exited, so what is typed next goes to the shell.
    fn wait_for_prompt(&self, seen: usize) {
        let deadline = Instant::now() + SHOW;
        while self.prompts() <= seen {
            assert!(
                Instant::now() < deadline,
                "no new prompt within {SHOW:?}; the screen shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Forgets what the pane showed, so that what shows next is new.
    fn clear(&self) {
        self.type_line("clear");
        std::thread::sleep(Duration::from_millis(200));
        self.run(&["clear-history", "-t", "t"]);
    }

    /// The process running in the pane's shell (the console), by its parent's children.
    fn foreground_child(&self) -> u32 {
        let out = self
            .command()
            .args(["display-message", "-p", "-t", "t", "#{pane_pid}"])
            .output()
            .expect("tmux display-message");
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let deadline = Instant::now() + SHOW;
        loop {
            let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().expect("a pid");
            }
            assert!(
                Instant::now() < deadline,
                "the pane's shell started nothing"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The local terminal's settings as `stty -g` prints them, through a file (the screen wraps).
fn stty_settings(tmux: &Tmux, dir: &Path, tag: &str) -> String {
    let path = dir.join(format!("stty-{tag}"));
    let done = dir.join(format!("stty-{tag}.done"));
    tmux.type_line(&format!(
        "stty -g > {} && touch {}",
        path.display(),
        done.display()
    ));
    let deadline = Instant::now() + SHOW;
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "stty -g did not run:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(path).expect("stty output")
}

/// The id in the console's "re-attach with: … --attach ID" line.
fn reattach_id(screen: &str) -> String {
    let line = screen
        .lines()
        .rfind(|l| l.contains("--attach "))
        .unwrap_or_else(|| panic!("no re-attach line in:\n{screen}"));
    line.rsplit("--attach ").next().unwrap().trim().to_owned()
}

#[test]
fn console_types_detaches_reattaches_with_scrollback_and_restores_the_terminal() {
    let local = Local::start();
    let sprite = local.sprite("console");
    let console = console_binary();
    let dir = TempDir::new("console");
    let shell = format!(
        "env SPRITES_API_URL={} SPRITES_TOKEN=test-token PS1='{PROMPT} ' sh",
        local.url()
    );
    let tmux = Tmux::start(&shell, dir.path());
    tmux.wait_for_prompt(0);
    let before = stty_settings(&tmux, dir.path(), "before");

    // A new session: type a command, see its output.
    tmux.type_line(&format!("{} {}", console.display(), sprite.name()));
    tmux.type_line("echo hello-$((6*7))");
    tmux.wait_for("hello-42");
    // The window's size, then a new size, reach the remote terminal.
    tmux.type_line("echo size-$((1+1)) $(stty size)");
    tmux.wait_for("size-2 40 120");
    tmux.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.type_line("echo size-$((1+2)) $(stty size)");
    tmux.wait_for("size-3 30 100");

    // Ctrl-\ detaches: the console says how to come back, the local terminal is as it was.
    let prompts = tmux.prompts();
    tmux.run(&["send-keys", "-t", "t", "C-\\"]);
    let screen = tmux.wait_for("re-attach with:");
    let id = reattach_id(&screen);
    tmux.wait_for_prompt(prompts);
    assert_eq!(stty_settings(&tmux, dir.path(), "detached"), before);
    let sessions = sprite.sessions().unwrap();
    assert!(
        sessions.iter().any(|s| s.id == id && s.tty),
        "{id} not in {sessions:?}"
    );

    // Back with --attach: the earlier output comes again (the screen was cleared), and the
    // session goes on.
    tmux.clear();
    assert!(!tmux.screen().contains("hello-42"));
    tmux.type_line(&format!(
        "{} {} --attach {id}",
        console.display(),
        sprite.name()
    ));
    tmux.wait_for("hello-42");
    tmux.type_line("echo again-$((2*3))");
    tmux.wait_for("again-6");
    // The session's exit ends the console with its status.
    let prompts = tmux.prompts();
    tmux.type_line("exit 3");
    tmux.wait_for_prompt(prompts);
    tmux.type_line("echo status=$?");
    tmux.wait_for("status=3");
    assert_eq!(stty_settings(&tmux, dir.path(), "exited"), before);
}

#[test]
fn console_restores_the_terminal_on_sigterm_and_leaves_the_session_running() {
    let local = Local::start();
    let sprite = local.sprite("console-term");
    let console = console_binary();
    let dir = TempDir::new("console-term");
    let shell = format!(
        "env SPRITES_API_URL={} SPRITES_TOKEN=test-token PS1='{PROMPT} ' sh",
        local.url()
    );
    let tmux = Tmux::start(&shell, dir.path());
    tmux.wait_for_prompt(0);
    let before = stty_settings(&tmux, dir.path(), "before");
    tmux.type_line(&format!("{} {}", console.display(), sprite.name()));
    tmux.type_line("echo up-$((4*4))");
    tmux.wait_for("up-16");
    let pid = tmux.foreground_child();
    let prompts = tmux.prompts();
    // SAFETY: kill(2) on the console this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let screen = tmux.wait_for("re-attach with:");
    assert!(screen.contains("console: signal 15"), "{screen}");
    let id = reattach_id(&screen);
    tmux.wait_for_prompt(prompts);
    tmux.type_line("echo status=$?");
    tmux.wait_for("status=143");
    assert_eq!(stty_settings(&tmux, dir.path(), "after"), before);
    // The session outlived the console.
    let sessions = sprite.sessions().unwrap();
    assert!(
        sessions.iter().any(|s| s.id == id),
        "{id} not in {sessions:?}"
    );
    sprite
        .kill_session(&id, "KILL", Duration::ZERO)
        .expect("kill the left session");
}

#[test]
fn console_restores_the_terminal_when_the_connection_fails() {
    let mut local = Local::start();
    let sprite = local.sprite("console-fail");
    let console = console_binary();
    let dir = TempDir::new("console-fail");
    let shell = format!(
        "env SPRITES_API_URL={} SPRITES_TOKEN=test-token PS1='{PROMPT} ' sh",
        local.url()
    );
    let tmux = Tmux::start(&shell, dir.path());
    tmux.wait_for_prompt(0);
    let before = stty_settings(&tmux, dir.path(), "before");
    tmux.type_line(&format!("{} {}", console.display(), sprite.name()));
    tmux.type_line("echo up-$((5*5))");
    tmux.wait_for("up-25");
    // The server shuts down under the session: the console reports the lost connection.
    let prompts = tmux.prompts();
    local.server.take().expect("running").shutdown();
    tmux.wait_for("console: connection closed before the exit status arrived");
    tmux.wait_for_prompt(prompts);
    tmux.type_line("echo status=$?");
    tmux.wait_for("status=1");
    assert_eq!(stty_settings(&tmux, dir.path(), "after"), before);
}
