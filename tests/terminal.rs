//! Terminal sessions, detach and attach, the session list and kill, through the real client
//! against a real sprites-local (`SPRITES_TEST_RUNTIME` picks the runtime, host by default).

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use sprites::{Child, ChildStdout, Error, Sprite, Stdio};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// How long any expected output may take to show.
const SHOW: Duration = Duration::from_secs(20);

/// A terminal's output read on a thread, so that waiting for text has a bound.
struct Screen {
    rx: Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Screen {
    fn new(mut stdout: ChildStdout) -> Screen {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends at EOF or an error, either of which the test's wait() reports.
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Screen {
            rx,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Waits until the output so far contains `needle`; panics with what it shows otherwise.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + SHOW;
        while !self.text().contains(needle) {
            match self.rx.recv_deadline(deadline) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {needle:?} within {SHOW:?}; the screen shows {:?}",
                        self.text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "output ended without {needle:?}; it showed {:?}",
                        self.text()
                    )
                }
            }
        }
        self.text()
    }

    /// Everything until the output ends (bounded).
    fn read_to_end(&mut self) -> String {
        let deadline = Instant::now() + SHOW;
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => return self.text(),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("output did not end within {SHOW:?}: {:?}", self.text())
                }
            }
        }
    }
}

/// An interactive shell in a terminal with piped stdin and stdout.
fn shell(sprite: &Sprite, size: Option<(u16, u16)>) -> (Child, Screen) {
    let mut command = sprite.command("sh");
    command
        .tty(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some((rows, cols)) = size {
        command.tty_size(rows, cols);
    }
    let mut child = command.spawn().expect("spawn a terminal shell");
    assert!(child.is_tty());
    let shown = format!("{child:?}");
    assert!(
        shown.starts_with("Child {") && shown.contains("tty: true"),
        "{shown}"
    );
    let screen = Screen::new(child.stdout.take().expect("piped"));
    (child, screen)
}

fn type_line(child: &mut Child, line: &str) {
    let stdin = child.stdin.as_mut().expect("piped stdin");
    stdin.write_all(line.as_bytes()).expect("type");
    stdin.write_all(b"\n").expect("type");
}

/// Runs `exit` in the shell and waits for it.
fn exit_shell(mut child: Child, code: i32) {
    type_line(&mut child, &format!("exit {code}"));
    let status = child.wait().expect("the shell's exit status");
    assert_eq!(status.code(), Some(code), "{status}");
}

#[test]
fn stty_size_shows_the_initial_size_and_then_a_resize() {
    let local = Local::start();
    let sprite = local.sprite("size");
    let (mut child, mut screen) = shell(&sprite, Some((24, 80)));
    type_line(&mut child, "echo size-$((6*7)) $(stty size)");
    screen.wait_for("size-42 24 80");
    child.resize(40, 120).unwrap();
    // Queued after the resize, so it reaches the shell after it.
    type_line(&mut child, "echo size-$((6*8)) $(stty size)");
    screen.wait_for("size-48 40 120");
    exit_shell(child, 0);
}

#[test]
fn resize_needs_a_terminal_and_a_real_size() {
    let local = Local::start();
    let sprite = local.sprite("resize");
    let mut plain = common::spawn_sleeper(&sprite);
    let err = plain.resize(24, 80).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(!plain.is_tty());
    plain.kill().unwrap();
    plain.wait().unwrap();

    let (mut child, _screen) = shell(&sprite, None);
    for (rows, cols) in [(0, 80), (24, 0)] {
        let err = child.resize(rows, cols).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
    let err = sprite
        .command("true")
        .tty(true)
        .tty_size(0, 80)
        .status()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    exit_shell(child, 0);
}

#[test]
fn the_program_sees_a_terminal_and_its_output_is_the_terminals() {
    let local = Local::start();
    let sprite = local.sprite("is-tty");
    let out = sprite
        .command("sh")
        .args([
            "-c",
            "test -t 0 && test -t 1 && test -t 2 && echo on-a-tty; echo to-stderr >&2; exit 3",
        ])
        .tty(true)
        .output()
        .unwrap();
    // stderr goes through the same terminal, which turns \n into \r\n.
    assert_eq!(out.stdout, b"on-a-tty\r\nto-stderr\r\n");
    assert!(out.stderr.is_empty());
    assert_eq!(out.status.code(), Some(3));
    // Without a terminal nothing changes.
    let out = sprite
        .command("sh")
        .args(["-c", "test -t 0 || echo no-tty"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"no-tty\n");
}

#[test]
fn ctrl_c_interrupts_a_sleep_in_a_terminal() {
    let local = Local::start();
    let sprite = local.sprite("ctrl-c");
    let mut child = sprite
        .command("sleep")
        .arg("60")
        .tty(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    child.stdin.as_mut().unwrap().write_all(&[0x03]).unwrap();
    let status = child.wait().unwrap();
    // The terminal turned ^C into SIGINT for the foreground process: 128 + 2.
    assert_eq!(status.signal(), Some(2), "{status}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_full_screen_program_runs() {
    let local = Local::start();
    let sprite = local.sprite("top");
    let out = sprite
        .command("top")
        .args(["-n", "1"])
        .env("TERM", "xterm")
        .tty(true)
        .tty_size(30, 100)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    let screen = String::from_utf8_lossy(&out.stdout);
    // Drawn with escape sequences (not top's batch mode), with its process table.
    assert!(screen.contains("\x1b["), "{screen:?}");
    assert!(screen.contains("PID"), "{screen:?}");
}

#[test]
fn detach_then_attach_replays_the_earlier_output_and_goes_on_live() {
    let local = Local::start();
    let sprite = local.sprite("reattach");
    let (mut child, mut screen) = shell(&sprite, None);
    type_line(&mut child, "echo before-$((20+1))");
    screen.wait_for("before-21");
    let id = child.session_id().expect("session_info");
    child.detach();

    let mut again = sprite.attach(&id).unwrap();
    assert!(again.is_tty());
    assert!(again.stderr.is_none(), "a terminal has no separate stderr");
    assert_eq!(again.session_id().as_deref(), Some(id.as_str()));
    let mut screen = Screen::new(again.stdout.take().unwrap());
    // The scrollback, from before this client was attached.
    screen.wait_for("before-21");
    type_line(&mut again, "echo after-$((20+2))");
    screen.wait_for("after-22");
    exit_shell(again, 4);
}

#[test]
fn a_non_tty_detachable_session_keeps_stdout_and_stderr_apart_on_attach() {
    let local = Local::start();
    let sprite = local.sprite("streams");
    let child = sprite
        .command("sh")
        .args([
            "-c",
            "echo out-1; echo err-1 >&2; read line; echo \"out-$line\"; exit 5",
        ])
        .detachable(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(!child.is_tty());
    let id = child.session_id().expect("session_info");
    child.detach();

    let mut again = sprite.attach(&id).unwrap();
    assert!(!again.is_tty());
    let mut stdin = again.stdin.take().unwrap();
    stdin.write_all(b"2\n").unwrap();
    let out = again.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"out-1\nout-2\n");
    assert_eq!(out.stderr, b"err-1\n");
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn two_attachments_both_see_the_output_and_either_may_type() {
    let local = Local::start();
    let sprite = local.sprite("two");
    let (child, _) = shell(&sprite, None);
    let id = child.session_id().expect("session_info");
    child.detach();
    let mut a = sprite.attach(&id).unwrap();
    let mut b = sprite.attach(&id).unwrap();
    let mut screen_a = Screen::new(a.stdout.take().unwrap());
    let mut screen_b = Screen::new(b.stdout.take().unwrap());
    type_line(&mut a, "echo from-a-$((3*3))");
    screen_a.wait_for("from-a-9");
    screen_b.wait_for("from-a-9");
    type_line(&mut b, "echo from-b-$((4*4))");
    screen_a.wait_for("from-b-16");
    screen_b.wait_for("from-b-16");
    // One leaves; the other stays attached to a live session.
    drop(a);
    type_line(&mut b, "echo still-$((5*5))");
    screen_b.wait_for("still-25");
    exit_shell(b, 0);
}

#[test]
fn a_dropped_attachment_detaches_and_never_kills() {
    let local = Local::start();
    let sprite = local.sprite("drop");
    let (child, _) = shell(&sprite, None);
    let id = child.session_id().expect("session_info");
    child.detach();
    for _ in 0..3 {
        let attached = sprite.attach(&id).unwrap();
        drop(attached);
    }
    let listed = sprite.sessions().unwrap();
    assert!(listed.iter().any(|s| s.id == id && s.tty), "{listed:?}");
    let mut again = sprite.attach(&id).unwrap();
    let mut screen = Screen::new(again.stdout.take().unwrap());
    type_line(&mut again, "echo alive-$((7*7))");
    screen.wait_for("alive-49");
    exit_shell(again, 0);
}

#[test]
fn a_pipe_moves_out_of_an_owned_child_and_the_rest_of_an_attachment_detaches() {
    let local = Local::start();
    let sprite = local.sprite("move");
    // std's Child allows this; so must ours (no Drop on Child).
    let mut out = String::new();
    sprite
        .command("echo")
        .arg("moved")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
        .stdout
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "moved\n");

    let (mut child, mut screen) = shell(&sprite, None);
    type_line(&mut child, "echo kept-$((8*8))");
    screen.wait_for("kept-64");
    let id = child.session_id().unwrap();
    // The attachment is dropped at the end of the statement: it detaches, so its stdout ends
    // (EOF, within the bound, with whatever of the scrollback had arrived), and the session
    // goes on.
    let stdout = sprite.attach(&id).unwrap().stdout.unwrap();
    Screen::new(stdout).read_to_end();
    type_line(&mut child, "echo still-$((9*9))");
    screen.wait_for("still-81");
    exit_shell(child, 0);
}

#[test]
fn the_list_shows_a_session_while_it_lives_and_not_after() {
    let local = Local::start();
    let sprite = local.sprite("list");
    let (mut child, _screen) = shell(&sprite, Some((30, 90)));
    let id = child.session_id().expect("session_info");
    let listed = sprite.sessions().unwrap();
    let session = listed
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} not in {listed:?}"));
    assert!(session.tty && session.is_active, "{session:?}");
    assert_eq!(session.command, "sh");
    assert!(!session.created.is_empty());
    type_line(&mut child, "exit 0");
    assert!(child.wait().unwrap().success());
    // sprites-local drops a session from its list right after it sends the exit report, so a
    // list that crosses the report on the wire may still show it for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = sprite.sessions().unwrap();
        if listed.iter().all(|s| s.id != id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still listed after exit: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_session_reports_progress_and_an_exited_session_is_ok() {
    let local = Local::start();
    let sprite = local.sprite("kill");
    let child = sprite
        .command("sleep")
        .arg("60")
        .detachable(true)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let id = child.session_id().expect("session_info");
    child.detach();
    let report = sprite
        .kill_session(&id, "SIGTERM", Duration::from_secs(5))
        .unwrap();
    assert!(!report.already_exited);
    assert_eq!(report.exit_code(), Some(128 + 15), "{report:?}");
    assert!(
        report.progress.iter().any(|p| p.kind == "signal"),
        "{report:?}"
    );
    // Gone now: asking again is a success that says so.
    let again = sprite.kill_session(&id, "TERM", Duration::ZERO).unwrap();
    assert!(again.already_exited);
    // A session that never existed is not found.
    let err = sprite
        .kill_session("999999999", "TERM", Duration::ZERO)
        .unwrap_err();
    assert!(err.api().is_some_and(|a| a.is_not_found()), "{err}");
    assert!(matches!(
        sprite.kill_session(&id, "TERM;rm", Duration::ZERO),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn attaching_to_what_cannot_be_attached_is_a_typed_error() {
    let local = Local::start();
    let sprite = local.sprite("no-attach");
    let err = sprite.attach("999999999").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    // An ordinary command is not detachable.
    let mut plain = common::spawn_sleeper(&sprite);
    let id = plain.session_id().unwrap();
    let err = sprite.attach(&id).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    plain.kill().unwrap();
    plain.wait().unwrap();
    let err = sprite.attach("").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn an_attachment_waits_for_the_sessions_exit() {
    let local = Local::start();
    let sprite = local.sprite("wait");
    let (mut child, _) = shell(&sprite, None);
    let id = child.session_id().unwrap();
    let mut watcher = sprite.attach(&id).unwrap();
    let mut screen = Screen::new(watcher.stdout.take().unwrap());
    type_line(&mut child, "echo bye; exit 7");
    screen.wait_for("bye");
    assert_eq!(watcher.wait().unwrap().code(), Some(7));
    assert_eq!(child.wait().unwrap().code(), Some(7));
    screen.read_to_end();
}

/// A raw WebSocket client that starts a terminal shell, types a line and vanishes: the TCP
/// connection is reset, no close frame.
fn start_and_vanish(local: &Local, sprite: &Sprite, line: &str) -> String {
    use std::os::fd::AsRawFd;
    let addr = local.url().trim_start_matches("http://").to_owned();
    let tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(SHOW)).unwrap();
    let handle = tcp.try_clone().unwrap();
    let url = format!(
        "ws://{addr}/v1/sprites/{}/exec?cmd=sh&path=sh&tty=true&stdin=true",
        sprite.name()
    );
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer test-token".parse().unwrap());
    let (mut ws, _) = tungstenite::client::client(request, tcp).unwrap();
    let id = match ws.read().unwrap() {
        tungstenite::Message::Text(text) => {
            let info: serde_json::Value = serde_json::from_str(&text).unwrap();
            info["session_id"].as_str().unwrap().to_owned()
        }
        other => panic!("expected session_info, got {other:?}"),
    };
    ws.send(tungstenite::Message::Binary(
        format!("{line}\n").into_bytes().into(),
    ))
    .unwrap();
    // Wait for the echo of the line, so the shell has it, then cut.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(line) {
        if let tungstenite::Message::Binary(data) = ws.read().unwrap() {
            seen.extend_from_slice(&data);
        }
    }
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            handle.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // Dropping a tungstenite WebSocket sends nothing; closing the socket's last descriptor
    // with a zero linger resets the connection.
    drop(handle);
    drop(ws);
    id
}

#[test]
fn a_terminal_session_survives_a_client_that_vanishes_without_a_close_frame() {
    let local = Local::start();
    let sprite = local.sprite("vanish");
    let id = start_and_vanish(&local, &sprite, "echo vanished-$((5*5))");
    let mut again = sprite.attach(&id).unwrap();
    let mut screen = Screen::new(again.stdout.take().unwrap());
    screen.wait_for("vanished-25");
    type_line(&mut again, "echo back-$((6*6))");
    screen.wait_for("back-36");
    exit_shell(again, 0);
}

#[test]
fn a_server_shutdown_under_a_terminal_session_is_an_error_never_a_status() {
    let mut local = Local::start();
    let sprite = local.sprite("shutdown");
    let (mut child, mut screen) = shell(&sprite, None);
    type_line(&mut child, "echo up-$((2*2))");
    screen.wait_for("up-4");
    local.server.take().expect("running").shutdown();
    let err = child.wait().unwrap_err();
    match Error::from_io(&err) {
        // sprites-local closes with 1001 when it shuts down (PROTOCOL.md §6.6).
        Some(Error::ConnectionClosed { code, reason }) => {
            assert_eq!(*code, Some(1001), "{reason}");
        }
        other => panic!("expected ConnectionClosed, got {other:?} ({err})"),
    }
}
