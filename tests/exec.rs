//! End to end: `Command`/`Child` against a real `sprites-local` over loopback.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, pseudo_random, rss_kib};
use sprites::{Error, ServerMessage, Stdio};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

#[test]
fn output_captures_stdout_stderr_and_status() {
    let local = Local::start();
    let sprite = local.sprite("out");
    let out = sprite
        .command("sh")
        .args(["-c", "echo hi; echo err >&2; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(3));
    assert!(!out.status.success());
    assert_eq!(out.status.to_string(), "exit status: 3");
}

#[test]
fn status_and_spawn_report_exit_codes() {
    let local = Local::start();
    let sprite = local.sprite("codes");
    for code in [0, 1, 3, 255] {
        let status = sprite
            .command("sh")
            .args(["-c", &format!("exit {code}")])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code));
        assert_eq!(status.success(), code == 0);
    }
    let mut child = sprite.command("true").stdin(Stdio::null()).spawn().unwrap();
    assert!(child.wait().unwrap().success());
    // A second wait returns the same status, as std's does.
    assert!(child.wait().unwrap().success());
}

#[test]
fn env_and_current_dir() {
    let local = Local::start();
    let sprite = local.sprite("env");
    let out = sprite
        .command("sh")
        .args(["-c", "printf '%s|%s|%s' \"$A\" \"$B\" \"$(pwd)\""])
        .env("A", "one two")
        .envs([("B", "x=y&z")])
        .current_dir("/tmp")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one two|x=y&z|/tmp");

    let out = sprite
        .command("sh")
        .args(["-c", "echo ${HOME:-unset}"])
        .env_remove("HOME")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"unset\n");
    let out = sprite
        .command("/usr/bin/env")
        .env_clear()
        .env("ONLY", "1")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"ONLY=1\n");
    // The default working directory is the sprite's home.
    let out = sprite
        .command("sh")
        .args(["-c", "test \"$(pwd)\" = \"$HOME\" && echo home"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"home\n");
}

#[test]
fn a_missing_working_directory_is_not_found_as_in_std() {
    let local = Local::start();
    let sprite = local.sprite("nodir");
    let err = sprite
        .command("true")
        .current_dir("/no/such/dir")
        .output()
        .unwrap_err();
    // std::process::Command::new("true").current_dir("/no/such/dir").output() is NotFound.
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let api = Error::from_io(&err)
        .and_then(Error::api)
        .expect("an API error");
    assert_eq!(api.status, 400);
}

#[test]
fn stdin_pipe_round_trips_64_mib_through_cat() {
    let local = Local::start();
    let sprite = local.sprite("cat");
    let data = pseudo_random(64 << 20, 0x5eed);
    let mut child = sprite
        .command("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            stdin.write_all(&data).unwrap();
            // Dropping stdin is the EOF that lets cat finish.
        })
    };
    let mut received = Vec::with_capacity(data.len());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut received)
        .unwrap();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(received.len(), data.len());
    assert!(received == data, "64 MiB came back different");
}

#[test]
fn stderr_is_kept_separate_when_interleaved() {
    let local = Local::start();
    let sprite = local.sprite("sep");
    let script = "for i in $(seq 1 200); do echo out$i; echo err$i >&2; done";
    let out = sprite.command("sh").args(["-c", script]).output().unwrap();
    let expect = |tag: &str| (1..=200).map(|i| format!("{tag}{i}\n")).collect::<String>();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expect("out"));
    assert_eq!(String::from_utf8(out.stderr).unwrap(), expect("err"));
}

#[test]
fn a_missing_program_is_not_found_quickly() {
    let local = Local::start();
    let sprite = local.sprite("missing");
    let err = sprite
        .command("definitely-not-a-program")
        .output()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("definitely-not-a-program"),
        "{err}"
    );
}

#[test]
fn dropping_stdin_is_eof() {
    let local = Local::start();
    let sprite = local.sprite("eof");
    let mut child = sprite
        .command("wc")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"12345").unwrap();
    drop(stdin);
    let mut count = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut count)
        .unwrap();
    assert_eq!(count.trim(), "5");
    assert!(child.wait().unwrap().success());
}

#[test]
fn kill_and_signal() {
    let local = Local::start();
    let sprite = local.sprite("kill");
    let mut child = common::spawn_sleeper(&sprite);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // As std reports a local kill: no exit code, the signal instead.
    assert_eq!((status.code(), status.signal()), (None, Some(9)));
    assert_eq!(status.to_string(), "signal: 9 (SIGKILL)");
    // Killing an exited child is fine, as in std.
    child.kill().unwrap();

    let mut child = sprite
        .command("sh")
        .args([
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    child.signal("SIGTERM").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(42));
    assert!(child.signal("not a signal!").is_err());
}

#[test]
fn timeout_kills_and_reports_timed_out() {
    let local = Local::start();
    let sprite = local.sprite("timeout");
    let started = Instant::now();
    let err = sprite
        .command("sleep")
        .arg("60")
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(
        matches!(Error::from_io(&err), Some(Error::TimedOut(_))),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the kill did not end the command"
    );
    // A command that finishes in time is unaffected.
    let out = sprite
        .command("echo")
        .arg("fast")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"fast\n");
}

#[test]
fn try_wait_and_session_id() {
    let local = Local::start();
    let sprite = local.sprite("trywait");
    let mut child = common::spawn_sleeper(&sprite);
    assert_eq!(child.try_wait().unwrap(), None);
    let id = child.session_id().expect("session id");
    assert_eq!(child.pid(), id.parse().ok());
    assert!(
        id.parse::<u32>().is_ok(),
        "session id {id:?} should be a pid"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(child.try_wait().unwrap().is_some());
}

#[test]
fn server_messages_reach_the_callback() {
    let local = Local::start();
    let sprite = local.sprite("msgs");
    let (tx, rx) = crossbeam_channel::unbounded();
    let out = sprite
        .command("true")
        .on_message(move |m| drop(tx.send(m)))
        .output()
        .unwrap();
    assert!(out.status.success());
    let first = rx.recv_timeout(Duration::from_secs(5)).expect("a message");
    assert!(
        matches!(first, ServerMessage::SessionInfo { tty: false, .. }),
        "{first:?}"
    );
}

#[test]
fn an_unread_stdout_does_not_grow_client_memory() {
    let local = Local::start();
    let sprite = local.sprite("unread");
    // 256 MiB of output that nobody reads for a while.
    let mut child = sprite
        .command("head")
        .args(["-c", "268435456", "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let before = rss_kib();
    // Give the stream every chance to pile up: wait until the pipeline is stalled, which we
    // see as the child still running after a pause.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "the command should be stalled on backpressure"
    );
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 32,
        "client memory grew by {grown_mib} MiB while stdout went unread"
    );
    // Now read it all: nothing was lost.
    let mut total = 0u64;
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0));
        total += n as u64;
    }
    assert_eq!(total, 268_435_456);
    assert!(child.wait().unwrap().success());
}

#[test]
fn fifty_concurrent_commands_on_one_sprite() {
    let local = Local::start();
    let sprite = local.sprite("par");
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let sprite = sprite.clone();
            std::thread::spawn(move || {
                let out = sprite
                    .command("sh")
                    .args(["-c", &format!("sleep 0.2; echo {i}")])
                    .output()
                    .unwrap();
                assert!(out.status.success());
                assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{i}\n"));
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn a_thousand_sequential_fast_commands() {
    let local = Local::start();
    let sprite = local.sprite("seq");
    for i in 0..1000 {
        let out = sprite.command("echo").arg("ok").output().unwrap();
        assert_eq!(out.stdout, b"ok\n", "run {i}");
        assert!(out.status.success(), "run {i}");
    }
}

#[test]
fn the_client_closes_at_once_after_exit() {
    // The server holds the socket ~5 s after the exit report unless the client closes; a client
    // that waits for the server's close would take that long per command.
    let local = Local::start();
    let sprite = local.sprite("tail");
    let started = Instant::now();
    for _ in 0..3 {
        sprite.command("true").output().unwrap();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "three commands took {elapsed:?}: the client is waiting for the server's close"
    );
}

#[test]
fn wait_with_output_drains_both_pipes_without_deadlock() {
    let local = Local::start();
    let sprite = local.sprite("drain");
    // 4 MiB on stderr before anything on stdout: reading stdout first would deadlock.
    let out = sprite
        .command("sh")
        .args(["-c", "head -c 4194304 /dev/zero >&2; echo done"])
        .output()
        .unwrap();
    assert_eq!(out.stderr.len(), 4 << 20);
    assert_eq!(out.stdout, b"done\n");
}

#[test]
fn signals_fall_back_to_the_kill_endpoint_without_the_capability() {
    // A server that does not advertise `signal` (PROTOCOL.md §2) ignores signal messages, so
    // only the HTTP kill endpoint can deliver these.
    let dir = common::TempDir::new("nosig");
    let server = sprites_local::Server::builder()
        .token("t")
        .data_dir(dir.path())
        .runtime(common::test_runtime())
        .signal_capability(false)
        .start()
        .unwrap();
    let client = sprites::Client::builder()
        .base_url(server.url())
        .token("t")
        .build()
        .unwrap();
    let sprite = client.create_sprite("old-runtime").unwrap();
    let mut child = common::spawn_sleeper(&sprite);
    child.signal("TERM").unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(15));

    let err = sprite
        .command("sleep")
        .arg("60")
        .timeout(Duration::from_millis(300))
        .output()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::TimedOut,
        "the timeout's kill went over HTTP too"
    );
}

/// A command run with an entry test of this binary as its parent: see
/// [`output_can_go_to_this_process_stderr`].
#[test]
#[ignore = "runs only as a child process of output_can_go_to_this_process_stderr"]
fn stdio_to_own_streams_entry() {
    let (Ok(url), Ok(sprite)) = (std::env::var("STDIO_URL"), std::env::var("STDIO_SPRITE")) else {
        return;
    };
    let client = sprites::Client::builder()
        .base_url(url)
        .token("test-token")
        .build()
        .unwrap();
    let status = client
        .sprite(sprite)
        .command("sh")
        .args(["-c", "echo to-stdout; echo to-stderr >&2"])
        .stdin(Stdio::null())
        .stdout(io::stderr())
        .stderr(io::stdout())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn output_can_go_to_this_process_stderr() {
    let local = Local::start();
    let sprite = local.sprite("ownstreams");
    // This test binary again, running only the entry above: its own stdout and stderr are
    // what the remote output is redirected to.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "stdio_to_own_streams_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env("STDIO_URL", local.url())
        .env("STDIO_SPRITE", sprite.name())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.contains("to-stdout\n"), "stderr: {stderr:?}");
    assert!(!stdout.contains("to-stdout"), "stdout: {stdout:?}");
    assert!(stdout.contains("to-stderr\n"), "stdout: {stdout:?}");
}

#[test]
fn stdio_from_local_files_feeds_stdin_and_takes_output() {
    let local = Local::start();
    let sprite = local.sprite("files");
    let dir = common::TempDir::new("stdio-files");
    let input = dir.path().join("in.txt");
    let data = pseudo_random(3 << 20, 3);
    std::fs::write(&input, &data).unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let status = sprite
        .command("sh")
        .args(["-c", "cat; echo done >&2"])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read(&out_path).unwrap() == data,
        "3 MiB round trip"
    );
    assert_eq!(std::fs::read(&err_path).unwrap(), b"done\n");
}

#[test]
fn remote_commands_chain_like_a_pipeline() {
    let local = Local::start();
    let sprite = local.sprite("pipeline");
    // seq 1 200000 | grep 7 | wc -l, each on the sprite, the bytes passing through here.
    let mut seq = sprite
        .command("seq")
        .args(["1", "200000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut grep = sprite
        .command("grep")
        .arg("7")
        .stdin(seq.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let count = sprite
        .command("wc")
        .arg("-l")
        .stdin(grep.stdout.take().unwrap())
        .output()
        .unwrap();
    let expected = (1..=200_000)
        .filter(|n: &u32| n.to_string().contains('7'))
        .count();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        expected.to_string()
    );
    assert!(seq.wait().unwrap().success());
    assert!(grep.wait().unwrap().success());

    // The other direction: a command's output written into another's ChildStdin.
    let mut sink = sprite
        .command("wc")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = sprite
        .command("head")
        .args(["-c", "100000", "/dev/zero"])
        .stdout(sink.stdin.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let out = sink.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
}

#[test]
fn remote_and_local_commands_chain_both_ways() {
    let local = Local::start();
    let sprite = local.sprite("mixed");
    // Remote printf | local sort.
    let mut printf = sprite
        .command("printf")
        .arg("pear\\napple\\nfig\\n")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sorted = std::process::Command::new("sort")
        .stdin(std::process::Stdio::try_from(printf.stdout.take().unwrap()).unwrap())
        .output()
        .unwrap();
    assert_eq!(sorted.stdout, b"apple\nfig\npear\n");
    assert!(printf.wait().unwrap().success());

    // Local printf | remote tr | local cat.
    let mut local_printf = std::process::Command::new("printf")
        .arg("shout\\n")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut local_cat = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = sprite
        .command("tr")
        .args(["a-z", "A-Z"])
        .stdin(local_printf.stdout.take().unwrap())
        .stdout(local_cat.stdin.take().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(local_printf.wait().unwrap().success());
    assert_eq!(local_cat.wait_with_output().unwrap().stdout, b"SHOUT\n");
}

#[test]
fn child_stdin_is_writable_through_a_shared_reference() {
    let local = Local::start();
    let sprite = local.sprite("sharedstdin");
    let mut child = sprite
        .command("sort")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    std::thread::scope(|scope| {
        for word in ["b", "c", "a"] {
            let stdin = &stdin;
            scope.spawn(move || {
                let mut writer: &sprites::ChildStdin = stdin;
                writer.write_all(format!("{word}\n").as_bytes()).unwrap();
                writer.flush().unwrap();
            });
        }
    });
    drop(stdin);
    assert_eq!(child.wait_with_output().unwrap().stdout, b"a\nb\nc\n");
}

#[test]
fn stdio_used_the_wrong_way_is_invalid_input_before_anything_runs() {
    let local = Local::start();
    let sprite = local.sprite("wrongway");
    let err = sprite
        .command("true")
        .stdin(io::stdout())
        .status()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let mut upstream = sprite
        .command("echo")
        .arg("x")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let err = sprite
        .command("true")
        .stdout(upstream.stdout.take().unwrap())
        .status()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    upstream.wait().unwrap();

    // A remote pipe feeds one spawn; a second spawn of the same Command says so.
    let mut upstream = sprite
        .command("echo")
        .arg("once")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cat = sprite.command("cat");
    cat.stdin(upstream.stdout.take().unwrap());
    assert_eq!(cat.output().unwrap().stdout, b"once\n");
    assert_eq!(
        cat.output().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    upstream.wait().unwrap();
}

#[test]
fn output_already_half_read_still_reaches_the_next_command() {
    let local = Local::start();
    let sprite = local.sprite("halfread");
    let mut upstream = sprite
        .command("printf")
        .arg("hello\\n")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = upstream.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"h");
    // The rest of the chunk the reader holds goes first, then whatever follows.
    let out = sprite.command("cat").stdin(stdout).output().unwrap();
    assert_eq!(out.stdout, b"ello\n");
    assert!(upstream.wait().unwrap().success());
}
