//! What a long run of commands leaves behind in the client process: nothing.
//!
//! Alone in its own test binary, so no other test's threads or sockets are counted, with the
//! server in a child process for the same reason.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{ServerProcess, fd_count, thread_count};
use sprites::Stdio;
use std::io::{self, Write};
use std::time::Duration;

/// Entry point for [`ServerProcess`]: serves only when the test binary is re-run for that.
#[test]
#[ignore = "runs only as a server process for the other tests"]
fn server_process_entry() {
    common::serve_if_asked();
}

#[test]
fn no_thread_or_descriptor_left_after_a_thousand_execs() {
    let server = ServerProcess::start("server_process_entry");
    let sprite = server.client.create_sprite("leaks").unwrap();
    // Warm up once so lazily created process-wide state (TLS init, stdio locks) is not counted,
    // with the sprite's control connection open (and its keeper thread running) before the
    // count: the pool's one connection is the steady state the loop must come back to.
    sprite.connect().unwrap();
    sprite.command("true").output().unwrap();
    let (threads, fds) = (thread_count(), fd_count());

    for i in 0..1000 {
        match i % 10 {
            // Failed: no such program.
            0 => assert_eq!(
                sprite
                    .command("no-such-program")
                    .output()
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::NotFound
            ),
            // Killed.
            1 => {
                let mut child = common::spawn_sleeper(&sprite);
                child.kill().unwrap();
                assert_eq!(child.wait().unwrap().signal(), Some(9));
            }
            // Timed out (a few of them: each costs its timeout).
            2 if i % 100 == 2 => {
                let err = sprite
                    .command("sleep")
                    .arg("30")
                    .timeout(Duration::from_millis(50))
                    .output()
                    .unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            }
            // Piped stdin, dropped child after exit.
            3 => {
                let mut child = sprite
                    .command("cat")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(b"x").unwrap();
                assert_eq!(child.wait_with_output().unwrap().stdout, b"x");
            }
            _ => assert_eq!(
                sprite.command("echo").arg("ok").output().unwrap().stdout,
                b"ok\n"
            ),
        }
    }
    let (threads_after, fds_after) = (thread_count(), fd_count());
    assert_eq!(threads_after, threads, "threads before/after");
    assert_eq!(fds_after, fds, "descriptors before/after");
}
