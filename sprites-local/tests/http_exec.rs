//! End-to-end tests of the exec over HTTP (`POST /v1/sprites/{name}/exec`, PROTOCOL.md
//! §6.9): a real server on loopback, raw HTTP/1.1 over a `TcpStream`, the response's chunks
//! parsed one by one so that "one frame per chunk" is checked, not assumed. Every wait is
//! bounded by a socket timeout or a deadline.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use common::*;
use sprites_local::{Runtime, Server, ServerHandle};

/// Largest frame the server may send (type byte + payload).
const MAX_FRAME: usize = 16 * 1024;

fn start(tag: &str) -> (ServerHandle, TempDir) {
    let dir = TempDir::new(tag);
    let s = Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .runtime(Runtime::Host)
        .start()
        .unwrap();
    (s, dir)
}

/// An HTTP exec in progress: the connection, its response head, and a reader of its
/// chunks.
struct Exec {
    r: BufReader<TcpStream>,
    w: TcpStream,
    head: Resp,
}

impl Exec {
    /// Sends the head of `POST /v1/sprites/{sprite}/exec?{query}` with `extra` header lines
    /// (each ending in CRLF), then reads the response head.
    fn start(addr: SocketAddr, sprite: &str, query: &str, extra: &str) -> Exec {
        let mut e = Exec::send_head(addr, sprite, query, extra);
        e.read_head();
        e
    }

    fn send_head(addr: SocketAddr, sprite: &str, query: &str, extra: &str) -> Exec {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut w = s.try_clone().unwrap();
        write!(
            w,
            "POST /v1/sprites/{sprite}/exec?{query} HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer secret\r\nContent-Type: application/octet-stream\r\n{extra}\r\n"
        )
        .unwrap();
        Exec {
            r: BufReader::new(s),
            w,
            head: Resp::from_head("HTTP/1.1 000 -".into()),
        }
    }

    fn read_head(&mut self) {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.r.read_line(&mut line).unwrap() > 0,
                "head cut: {head:?}"
            );
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        self.head = Resp::from_head(head.trim_end().to_owned());
    }

    /// The next chunk's data, or None at the body's end (the last chunk).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut line = String::new();
        assert!(self.r.read_line(&mut line).unwrap() > 0, "body cut");
        let n = usize::from_str_radix(line.trim_end(), 16).unwrap();
        let mut data = vec![0u8; n + 2];
        self.r.read_exact(&mut data).unwrap();
        assert_eq!(&data[n..], b"\r\n");
        data.truncate(n);
        (n > 0).then_some(data)
    }

    /// The next frame, checked to be exactly one chunk: a known type, a payload, at most
    /// [`MAX_FRAME`] bytes. `(type, payload)`; None at the body's end.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let c = self.chunk()?;
        assert!(c.len() <= MAX_FRAME, "a {}-byte chunk", c.len());
        match c[0] {
            1 | 2 => assert!(c.len() > 1, "an empty output frame"),
            3 => assert_eq!(c.len(), 2, "an exit frame is 2 bytes"),
            t => panic!("chunk of unknown type {t}"),
        }
        Some((c[0], c[1..].to_vec()))
    }

    /// Reads every frame to the body's end (checking that the exit frame is last and the
    /// server then closes): (stdout, stderr, exit code).
    fn finish(mut self) -> (Vec<u8>, Vec<u8>, u8) {
        let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
        while let Some((t, p)) = self.frame() {
            assert_eq!(exit, None, "a frame after the exit frame");
            match t {
                1 => out.extend_from_slice(&p),
                2 => err.extend_from_slice(&p),
                _ => exit = Some(p[0]),
            }
        }
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the body: {rest:?}");
        (out, err, exit.expect("no exit frame"))
    }

    /// Sends one chunk of request body.
    fn send_chunk(&mut self, data: &[u8]) {
        write!(self.w, "{:x}\r\n", data.len()).unwrap();
        self.w.write_all(data).unwrap();
        self.w.write_all(b"\r\n").unwrap();
    }
}

/// One whole HTTP exec with `body` (sent with `Content-Length`) and the query `query`.
fn run(addr: SocketAddr, query: &str, body: &[u8]) -> (Vec<u8>, Vec<u8>, u8) {
    let mut e = Exec::send_head(
        addr,
        "box",
        query,
        &format!("Content-Length: {}\r\n", body.len()),
    );
    e.w.write_all(body).unwrap();
    e.read_head();
    assert_eq!(e.head.status, 200, "{}", e.head.head);
    e.finish()
}

/// A request that fails before the process starts: its status and §3.1 `error` code.
fn refused(addr: SocketAddr, sprite: &str, query: &str) -> (u16, String) {
    let raw = format!(
        "POST /v1/sprites/{sprite}/exec?{query} HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer secret\r\nContent-Length: 5\r\n\r\nhello"
    );
    let r = http_raw(addr, raw.as_bytes());
    let v = r.json();
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (r.status, v["error"].as_str().unwrap().to_owned())
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// The pid a `sh -c 'echo $$; …'` exec printed first.
fn first_line_pid(e: &mut Exec) -> i32 {
    let (t, p) = e.frame().unwrap();
    assert_eq!(t, 1);
    String::from_utf8(p).unwrap().trim().parse().unwrap()
}

#[test]
fn stdout_stderr_and_the_exit_code_come_one_frame_per_chunk() {
    let (s, _d) = start("frames");
    create(&s, "box");
    let e = Exec::start(
        s.addr(),
        "box",
        &q(&[
            "sh",
            "-c",
            "printf out; printf err >&2; printf more; exit 3",
        ]),
        "Content-Length: 0\r\n",
    );
    assert_eq!(e.head.status, 200);
    assert_eq!(
        e.head.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(e.head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(e.head.header("connection"), Some("close"));
    assert_eq!(e.head.header("sprite-version"), Some("0.1.0"));
    let (out, err, code) = e.finish();
    assert_eq!(
        (&out[..], &err[..], code),
        (&b"outmore"[..], &b"err"[..], 3)
    );

    // Exit codes are bytes; a signal death is 128 + N.
    assert_eq!(run(s.addr(), &q(&["true"]), b"").2, 0);
    assert_eq!(run(s.addr(), &q(&["sh", "-c", "exit 255"]), b"").2, 255);
    assert_eq!(run(s.addr(), &q(&["sh", "-c", "kill -9 $$"]), b"").2, 137);
    // Bigger output than a frame holds is cut into frames, none bigger than 16 KiB.
    let (out, _, code) = run(s.addr(), &q(&["head", "-c", "100000", "/dev/zero"]), b"");
    assert_eq!((out.len(), code), (100_000, 0));
}

#[test]
fn stdin_is_the_body_only_with_stdin_true() {
    let (s, _d) = start("stdin");
    create(&s, "box");
    let a = s.addr();
    let (out, _, code) = run(a, &format!("{}&stdin=true", q(&["cat"])), b"hello body");
    assert_eq!((&out[..], code), (&b"hello body"[..], 0));
    // No stdin parameter: the process reads EOF at once (the null device), whether a
    // body comes or not; a body is read and discarded.
    let t = Instant::now();
    let (out, _, code) = run(a, &q(&["sh", "-c", "cat; echo eof"]), b"");
    assert_eq!((&out[..], code), (&b"eof\n"[..], 0));
    let (out, _, code) = run(
        a,
        &q(&["sh", "-c", "cat; echo eof"]),
        b"not for the process",
    );
    assert_eq!((&out[..], code), (&b"eof\n"[..], 0));
    assert!(t.elapsed() < TIMEOUT);
    // `stdin=false` says the same.
    let (out, _, _) = run(a, &format!("{}&stdin=false", q(&["cat"])), b"ignored");
    assert!(out.is_empty());
    // A chunked body, sent while the output comes back: an interactive exchange.
    let mut e = Exec::start(
        a,
        "box",
        &format!(
            "{}&stdin=true",
            q(&["sh", "-c", "read a; echo got $a; read b; echo got $b"])
        ),
        "Transfer-Encoding: chunked\r\n",
    );
    e.send_chunk(b"one\n");
    assert_eq!(e.frame().unwrap(), (1, b"got one\n".to_vec()));
    e.send_chunk(b"two\n");
    assert_eq!(e.frame().unwrap(), (1, b"got two\n".to_vec()));
    e.w.write_all(b"0\r\n\r\n").unwrap();
    let (_, _, code) = e.finish();
    assert_eq!(code, 0);
}

#[test]
fn output_pipes_are_grown_to_1_mib() {
    let (s, _d) = start("pipes");
    create(&s, "box");
    // F_GETPIPE_SZ on the process's own stdout and stderr.
    let script = "import fcntl; print(fcntl.fcntl(1, 1032), fcntl.fcntl(2, 1032))";
    let (out, _, code) = run(s.addr(), &q(&["python3", "-c", script]), b"");
    assert_eq!(code, 0);
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && max < 1 << 20 {
        eprintln!("SKIPPED: pipes may not grow to 1 MiB here (max {max}, not root)");
        return;
    }
    assert_eq!(String::from_utf8_lossy(&out).trim(), "1048576 1048576");
}

#[test]
fn a_process_that_writes_before_reading_its_stdin_does_not_deadlock() {
    let (s, _d) = start("nodeadlock");
    create(&s, "box");
    // 8 MB out before it reads a byte of 8 MB in: far more than pipes and socket buffers
    // hold, so the server must forward output while the body waits.
    let len = 8u64 << 20;
    let mut e = Exec::start(
        s.addr(),
        "box",
        &format!(
            "{}&stdin=true",
            q(&["sh", "-c", "head -c 8388608 /dev/zero; cat"])
        ),
        "Transfer-Encoding: chunked\r\n",
    );
    let mut w = e.w.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let block: Vec<u8> = (0..64 * 1024u64).map(pattern).collect();
        for _ in 0..len / block.len() as u64 {
            write!(w, "{:x}\r\n", block.len()).unwrap();
            w.write_all(&block).unwrap();
            w.write_all(b"\r\n").unwrap();
        }
        w.write_all(b"0\r\n\r\n").unwrap();
    });
    let mut total = 0u64;
    let mut code = None;
    while let Some((t, p)) = e.frame() {
        match t {
            1 => total += p.len() as u64,
            3 => code = Some(p[0]),
            _ => panic!("stderr: {}", String::from_utf8_lossy(&p)),
        }
    }
    sender.join().unwrap();
    assert_eq!((total, code), (2 * len, Some(0)));
}

#[test]
fn errors_before_the_start_are_json_and_nothing_runs() {
    let (s, _d) = start("errors");
    create(&s, "box");
    let a = s.addr();
    assert_eq!(
        refused(a, "nope", &q(&["true"])),
        (404, "sprite_not_found".into())
    );
    assert_eq!(refused(a, "box", ""), (400, "invalid_request".into()));
    assert_eq!(
        refused(a, "box", &q(&["no-such-program-here"])),
        (400, "command_not_found".into())
    );
    assert_eq!(
        refused(
            a,
            "box",
            &format!("{}&dir=%2Fno%2Fsuch%2Fdir", q(&["true"]))
        ),
        (400, "invalid_directory".into())
    );
    assert_eq!(
        refused(a, "box", &format!("{}&tty=true", q(&["true"]))),
        (400, "invalid_request".into())
    );
    assert_eq!(
        refused(a, "box", &format!("{}&env=NOEQUALS", q(&["true"]))),
        (400, "invalid_request".into())
    );
    let list = http(a, "GET", "/v1/sprites/box/exec", None).json();
    assert_eq!(list["sessions"], serde_json::json!([]));
}

#[test]
fn a_missing_token_is_refused_before_the_body_is_read() {
    let (s, _d) = start("auth");
    create(&s, "box");
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    // A client that waits for `100 Continue` before its (huge) body gets the 401 instead.
    write!(
        c,
        "POST /v1/sprites/box/exec?{} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
         Content-Length: 1000000000\r\n\r\n",
        q(&["touch", "/tmp/never"])
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    let list = http(&s, "GET", "/v1/sprites/box/exec", None).json();
    assert_eq!(list["sessions"], serde_json::json!([]));
}

#[test]
fn a_client_that_leaves_kills_the_process() {
    let (s, _d) = start("leave");
    create(&s, "box");
    let a = s.addr();
    let sessions = |a| http(a, "GET", "/v1/sprites/box/exec", None).json()["sessions"].clone();

    // After its (empty) body, while the process is silent. The session is listed while
    // it runs, and not after.
    let mut e = Exec::start(a, "box", &q(&["sh", "-c", "echo $$; exec sleep 1000"]), "");
    let pid = first_line_pid(&mut e);
    let list = sessions(a);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], pid.to_string());
    assert_eq!(list[0]["command"], "sh -c echo $$; exec sleep 1000");
    drop(e);
    wait_until("the abandoned process to be killed", || process_gone(pid));
    wait_until("the session to end", || {
        sessions(a).as_array().unwrap().is_empty()
    });

    // In the middle of a chunked body, with the process reading it.
    let mut e = Exec::start(
        a,
        "box",
        &format!(
            "{}&stdin=true",
            q(&["sh", "-c", "echo $$; exec cat >/dev/null"])
        ),
        "Transfer-Encoding: chunked\r\n",
    );
    e.send_chunk(b"some stdin");
    let pid = first_line_pid(&mut e);
    drop(e);
    wait_until("the process to be killed mid-body", || process_gone(pid));

    // After the process closed its stdin: the rest of the body is discarded, and the
    // client's leaving is still seen.
    let mut e = Exec::start(
        a,
        "box",
        &format!(
            "{}&stdin=true",
            q(&["sh", "-c", "exec 0<&-; echo $$; exec sleep 1000"])
        ),
        "Transfer-Encoding: chunked\r\n",
    );
    let pid = first_line_pid(&mut e);
    e.send_chunk(&[b'x'; 4096]);
    e.send_chunk(&[b'y'; 4096]);
    drop(e);
    wait_until("the process to be killed after it closed stdin", || {
        process_gone(pid)
    });

    // While the body waits for room in the stdin pipe of a process that never reads it:
    // 144 KiB is more than the pipe (64 KiB) and the server's read buffer hold, and less
    // than fills the connection's window. (A client whose unsent body is stuck behind a
    // full window cannot be told from a slow one: its FIN waits behind that data, and only
    // the kernel's own give-up on the connection ends the exec.)
    let mut e = Exec::start(
        a,
        "box",
        &format!(
            "{}&stdin=true",
            q(&["sh", "-c", "echo $$; exec sleep 1000"])
        ),
        "Transfer-Encoding: chunked\r\n",
    );
    let pid = first_line_pid(&mut e);
    e.send_chunk(&[b'x'; 64 * 1024]);
    e.send_chunk(&[b'y'; 64 * 1024]);
    e.send_chunk(&[b'z'; 16 * 1024]);
    drop(e);
    wait_until("the process to be killed with its stdin full", || {
        process_gone(pid)
    });
    wait_until("every session to end", || {
        sessions(a).as_array().unwrap().is_empty()
    });
}

#[test]
fn sixty_four_mib_through_cat_byte_for_byte_in_constant_server_memory() {
    let server = ServerProcess::start();
    create(server.addr, "box");
    let query = format!("{}&stdin=true", q(&["cat"]));
    // Warm up: the per-connection buffers and threads exist from here on.
    let (out, _, _) = run(server.addr, &query, &vec![7u8; 1 << 20]);
    assert_eq!(out.len(), 1 << 20);
    let (base, _) = server.memory_kib();

    let len = 64u64 << 20;
    let t = Instant::now();
    let mut e = Exec::start(server.addr, "box", &query, "Transfer-Encoding: chunked\r\n");
    assert_eq!(e.head.status, 200);
    let mut w = e.w.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut at = 0u64;
        let mut block = Vec::with_capacity(100_000);
        while at < len {
            // Odd-sized chunks, so the server's reads and frames never line up with them.
            let n = (len - at).min(99_991);
            block.clear();
            block.extend((at..at + n).map(pattern));
            write!(w, "{n:x}\r\n").unwrap();
            w.write_all(&block).unwrap();
            w.write_all(b"\r\n").unwrap();
            at += n;
        }
        w.write_all(b"0\r\n\r\n").unwrap();
    });
    // Compared byte for byte as it comes, never held.
    let mut at = 0u64;
    let mut frames = 0u64;
    let mut code = None;
    while let Some((t, p)) = e.frame() {
        match t {
            1 => {
                assert!(
                    p.iter().zip(at..).all(|(b, i)| *b == pattern(i)),
                    "bytes differ near {at}"
                );
                at += p.len() as u64;
                frames += 1;
            }
            3 => code = Some(p[0]),
            _ => panic!("stderr: {}", String::from_utf8_lossy(&p)),
        }
    }
    sender.join().unwrap();
    let (rss, peak) = server.memory_kib();
    eprintln!(
        "64 MiB through cat over HTTP exec: {:?}, {frames} stdout frames; server RSS \
         {base} KiB before, {rss} KiB after, peak {peak} KiB",
        t.elapsed()
    );
    assert_eq!((at, code), (len, Some(0)));
    assert!(frames >= len / MAX_FRAME as u64, "{frames} frames");
    assert!(
        peak.saturating_sub(base) < 16 * 1024,
        "server memory grew from {base} KiB to a peak of {peak} KiB"
    );
}

#[test]
fn http_exec_runs_inside_a_sandboxed_sprite() {
    let Some((s, _dir)) = common::start("httpexec") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let (out, err, code) = run(
        a,
        &format!(
            "{}&stdin=true",
            q(&["sh", "-c", "cat; id -un; echo err >&2; exit 4"])
        ),
        b"in\n",
    );
    assert_eq!(String::from_utf8_lossy(&out), "in\nsprite\n");
    assert_eq!((&err[..], code), (&b"err\n"[..], 4));
    let mark = test_mark();
    let query = format!(
        "{}&env={}",
        q(&["sh", "-c", "echo $$; exec sleep 1000"]),
        enc(&mark)
    );
    let mut e = Exec::start(a, "box", &query, "");
    let pid = first_line_pid(&mut e);
    let list = http(a, "GET", "/v1/sprites/box/exec", None).json();
    let id: i32 = list["sessions"][0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id, pid, "the session id is the pid inside the sprite");
    assert!(marked_process(&mark).is_some());
    drop(e);
    wait_until("the sprite's process to be killed", || {
        marked_process(&mark).is_none()
    });
}
