//! The client against hostile or broken servers: small raw-TCP servers in this file that speak
//! just enough HTTP and WebSocket to misbehave the way the issue found (an endless body,
//! cycling continuation tokens, a close frame on a connection left open, silence, resets). The
//! real `sprites-local` never does these things, which is why they are written by hand here.
//! Every wait in a connection's handler has a bound; the accepting threads end with the test
//! binary.

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::hostile::{SERVER_LIFETIME, accept_upgrade, client, reset, respond_json, serve};
use common::rss_kib;
use sprites::{Client, Error, Stdio};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[test]
fn an_endless_chunked_file_body_stops_at_the_listed_size() {
    let _watchdog = common::Watchdog::arm("endless body");
    // The file lists as 1000 bytes; its body never ends.
    let (url, _server) = serve(|request, _, mut stream| {
        if request.target.contains("/fs/list") {
            respond_json(
                &mut stream,
                r#"{"entries":[{"name":"big","path":"/data/big","type":"file","size":1000}]}"#,
            );
            return;
        }
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let chunk = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < SERVER_LIFETIME {
            let head = format!("{:x}\r\n", chunk.len());
            let sent = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&chunk))
                .and_then(|()| stream.write_all(b"\r\n"));
            if sent.is_err() {
                return; // the client hung up: what it should do
            }
        }
    });
    let fs = client(&url).sprite("s").fs();
    let before = rss_kib();
    let started = Instant::now();
    let err = fs.read("/data/big").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(
        matches!(
            Error::from_io(&err),
            Some(Error::ResponseTooLarge { limit: 1000, .. })
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 16, "memory grew by {grown_mib} MiB");
}

#[test]
fn a_body_longer_than_its_content_length_is_read_to_the_declared_size_only() {
    let _watchdog = common::Watchdog::arm("overlong body");
    let (url, _server) = serve(|_, _, mut stream| {
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        let chunk = vec![b'y'; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let data = client(&url).sprite("s").fs().read("/f").unwrap();
    assert_eq!(data, vec![b'y'; 1000]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn pagination_that_cycles_between_tokens_ends() {
    let _watchdog = common::Watchdog::arm("cycling tokens");
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    // No token → A, A → B, B → A, ...: a server bug that a check of the last token misses.
    let (url, _server) = serve(move |request, _, mut stream| {
        counter.fetch_add(1, Ordering::SeqCst);
        let (name, next) = match request.target.split_once("continuation_token=") {
            None => ("first", "A"),
            Some((_, token)) if token.starts_with('A') => ("from-a", "B"),
            Some(_) => ("from-b", "A"),
        };
        respond_json(
            &mut stream,
            &format!(
                r#"{{"sprites":[{{"name":"{name}"}}],"has_more":true,"next_continuation_token":"{next}"}}"#
            ),
        );
    });
    let names: Vec<String> = client(&url)
        .sprites()
        .map(|s| s.unwrap().name)
        .take(100)
        .collect();
    assert_eq!(names, ["first", "from-a", "from-b"]);
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[test]
fn a_close_frame_on_a_connection_left_open_ends_the_command_at_once() {
    let _watchdog = common::Watchdog::arm("close left open");
    // stdout "hi", then close 1000 "bye" — and the TCP connection stays open for 20 s.
    let (url, _server) = serve(|request, _, mut stream| {
        accept_upgrade(&request, &mut stream);
        stream
            .write_all(b"\x82\x03\x01hi\x88\x05\x03\xe8bye")
            .unwrap();
        std::thread::sleep(Duration::from_secs(20));
    });
    let started = Instant::now();
    let mut child = client(&url)
        .sprite("s")
        .command("anything")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = Vec::new();
    let read = child.stdout.take().unwrap().read_to_end(&mut out);
    assert_eq!(out, b"hi");
    assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    let err = child.wait().unwrap_err();
    match Error::from_io(&err) {
        Some(Error::ConnectionClosed { code, reason }) => {
            assert_eq!((*code, reason.as_str()), (Some(1000), "bye"))
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "finished only after {:?} (the keepalive limit is 45 s)",
        started.elapsed()
    );
}

#[test]
fn a_watch_the_server_closes_normally_ends_without_an_error() {
    let _watchdog = common::Watchdog::arm("watch closed normally");
    // The snapshot, one event, then close 1000 — and the TCP connection stays open for 20 s.
    let (url, _server) = serve(|request, _, mut stream| {
        accept_upgrade(&request, &mut stream);
        let list = br#"{"type":"port_list","ports":[]}"#;
        let opened = br#"{"type":"port_opened","port":8080,"address":"0.0.0.0","pid":7}"#;
        for text in [&list[..], &opened[..]] {
            stream.write_all(&[0x81, text.len() as u8]).unwrap();
            stream.write_all(text).unwrap();
        }
        stream.write_all(b"\x88\x06\x03\xe8done").unwrap();
        std::thread::sleep(Duration::from_secs(20));
    });
    let started = Instant::now();
    let watch = client(&url).sprite("s").watch_ports().unwrap();
    assert!(watch.ports().is_empty());
    let events: Vec<_> = watch.collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].as_ref().unwrap().port, 8080);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ended only after {:?}",
        started.elapsed()
    );
}

/// User + system CPU time, in clock ticks, of this process's thread named `comm` (Linux).
fn thread_cpu_ticks(comm: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.trim_end() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
        return Some(ticks(14)? + ticks(15)?);
    }
    None
}

#[test]
fn a_quiet_watch_pings_once_per_keepalive_interval() {
    let _watchdog = common::Watchdog::arm("watch pings");
    // The snapshot, then a second of silence from the server while it counts the client's
    // pings (interval 100 ms), then close 1000.
    let pings = Arc::new(AtomicUsize::new(0));
    let counted = pings.clone();
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        accept_upgrade(&request, &mut stream);
        let list = br#"{"type":"port_list","ports":[]}"#;
        stream.write_all(&[0x81, list.len() as u8]).unwrap();
        stream.write_all(list).unwrap();
        let until = Instant::now() + Duration::from_millis(1000);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            // A masked client frame with a short payload: header, mask key, payload.
            let mut head = [0u8; 2];
            if reader.read_exact(&mut head).is_err() {
                break;
            }
            let mut rest = vec![0u8; 4 + (head[1] & 0x7f) as usize];
            reader.read_exact(&mut rest).unwrap();
            if head[0] & 0x0f == 0x9 {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
        stream.write_all(b"\x88\x02\x03\xe8").unwrap();
        std::thread::sleep(Duration::from_secs(5));
    });
    let client = Client::builder()
        .base_url(&url)
        .token("t")
        .control_connections(false)
        .keepalive(Duration::from_millis(100), Duration::from_secs(10))
        .build()
        .unwrap();
    let watch = client.sprite("s").watch_ports().unwrap();
    // Waiting between pings is a wait, not a spin: the watch's thread has used next to no CPU
    // half a second into the silence (clock ticks are 10 ms; a spin would use ~50).
    std::thread::sleep(Duration::from_millis(500));
    let ticks = thread_cpu_ticks("sprites-port-wa").expect("the watch's thread");
    assert!(
        ticks <= 10,
        "the watch's thread used {ticks} ticks of CPU while waiting"
    );
    assert_eq!(watch.count(), 0, "no events, and a clean end");
    let pings = pings.load(Ordering::SeqCst);
    // About ten in the second; a busy loop would send thousands, a stalled one none.
    assert!(
        (5..=20).contains(&pings),
        "{pings} pings in 1 s at a 100 ms interval"
    );
}

#[test]
fn a_name_that_does_not_resolve_is_not_found() {
    let client = client("http://no-such-host.invalid:7780");
    let err = client.get_sprite("x").unwrap_err();
    let Error::Transport(transport) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(transport.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    let err = client.sprite("x").command("true").output().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(matches!(Error::from_io(&err), Some(Error::Transport(_))));
}

#[test]
fn a_refused_connection_is_connection_refused_with_its_io_error() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client(&format!("http://127.0.0.1:{port}"));
    let err = client.get_sprite("x").unwrap_err();
    assert_eq!(err.io_kind(), io::ErrorKind::ConnectionRefused, "{err}");
    // The io::Error is in the source chain, with its OS code.
    let mut source = std::error::Error::source(&err);
    let mut found = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            found = Some(io.kind());
        }
        source = e.source();
    }
    assert_eq!(found, Some(io::ErrorKind::ConnectionRefused));
    let err = client.sprite("x").command("true").output().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_server_that_never_answers_is_timed_out() {
    let _watchdog = common::Watchdog::arm("silent server");
    let (url, _server) = serve(|_, _, _stream| std::thread::sleep(Duration::from_secs(10)));
    let client = Client::builder()
        .base_url(&url)
        .token("t")
        .http_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.get_sprite("x").unwrap_err();
    assert_eq!(err.io_kind(), io::ErrorKind::TimedOut, "{err}");
    let err = client.sprite("x").command("true").output().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    let err = client.sprite("x").fs().read("/f").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_server_that_stops_reading_an_upload_is_a_write_timeout() {
    let _watchdog = common::Watchdog::arm("write timeout");
    // Reads the request head, then nothing: the upload fills the socket buffers and stalls.
    let (url, _server) = serve(|_, _, _stream| std::thread::sleep(Duration::from_secs(15)));
    let client = Client::builder()
        .base_url(&url)
        .token("t")
        .http_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .sprite("s")
        .fs()
        .write("/big", vec![0u8; 64 << 20])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(matches!(Error::from_io(&err), Some(Error::Transport(_))));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_reset_mid_body_is_connection_reset() {
    let _watchdog = common::Watchdog::arm("reset mid-body");
    let (url, _server) = serve(|_, _, mut stream| {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"name\":"
        );
        let _ = stream.flush();
        std::thread::sleep(Duration::from_millis(100));
        reset(stream);
    });
    let client = client(&url);
    let err = client.get_sprite("x").unwrap_err();
    assert_eq!(err.io_kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let err = client.sprite("s").fs().read("/f").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

#[test]
fn a_json_body_that_is_not_json_keeps_the_parse_error() {
    let (url, _server) = serve(|_, _, mut stream| respond_json(&mut stream, "{not json"));
    let err = client(&url).get_sprite("x").unwrap_err();
    let Error::Decode(source) = &err else {
        panic!("{err:?}")
    };
    assert!(source.is_syntax());
    assert_eq!(err.io_kind(), io::ErrorKind::InvalidData);
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn keepalive_pings_go_out_at_their_interval_not_in_a_loop() {
    let _watchdog = common::Watchdog::arm("ping count");
    let (tx, rx) = crossbeam_channel::bounded(1);
    // Counts the client's ping frames for 1 s, then reports exit 0.
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        accept_upgrade(&request, &mut stream);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let started = Instant::now();
        let mut pings = 0;
        let mut head = [0u8; 2];
        while started.elapsed() < Duration::from_secs(1) {
            if reader.read_exact(&mut head).is_err() {
                continue; // a read timeout: nothing sent yet
            }
            // Client frames are masked: a 4-byte key, then the payload (short ones here).
            let len = usize::from(head[1] & 0x7f);
            let mut rest = vec![0u8; 4 + len];
            if reader.read_exact(&mut rest).is_err() {
                break;
            }
            if head[0] & 0x0f == 0x9 {
                pings += 1;
                // The pong, so the client hears from us.
                let _ = stream.write_all(&[0x8a, 0x00]);
            }
        }
        let _ = stream.write_all(b"\x82\x02\x03\x00");
        let _ = tx.send(pings);
        std::thread::sleep(Duration::from_millis(200));
    });
    let client = Client::builder()
        .base_url(&url)
        .token("t")
        .keepalive(Duration::from_millis(200), Duration::from_secs(5))
        .build()
        .unwrap();
    let out = client.sprite("s").command("x").output().unwrap();
    assert!(out.status.success());
    let pings = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        (3..=7).contains(&pings),
        "{pings} pings in 1 s at a 200 ms interval"
    );
}

#[test]
fn a_server_that_announces_no_session_says_so_without_making_us_wait() {
    let _watchdog = common::Watchdog::arm("no session_info");
    // stdout first (so no session_info is coming), then a text exit report after 2 s.
    let (url, _server) = serve(|request, _, mut stream| {
        accept_upgrade(&request, &mut stream);
        stream.write_all(b"\x82\x02\x01x").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let exit = br#"{"type":"exit","exit_code":3}"#;
        stream.write_all(&[0x81, exit.len() as u8]).unwrap();
        stream.write_all(exit).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut child = client(&url)
        .sprite("s")
        .command("x")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    let asked = Instant::now();
    assert_eq!(child.session_id(), None);
    assert_eq!(child.pid(), None);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    // The text exit report ends the command like the binary one.
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn get_or_create_creates_on_not_found_survives_a_lost_race_and_stops_on_other_errors() {
    let _watchdog = common::Watchdog::arm("get_or_create");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    // GET → 404, POST → "already exists" (someone else won), GET again → the sprite.
    let (url, _server) = serve(move |request, mut reader, mut stream| {
        let method = request.method.clone();
        let gets = {
            let mut log = seen.lock().unwrap();
            log.push(format!("{method} {}", request.target));
            log.iter().filter(|l| l.starts_with("GET")).count()
        };
        if let Some(len) = request.header("content-length") {
            let mut body = vec![0u8; len.parse().unwrap()];
            let _ = reader.read_exact(&mut body);
        }
        let (status, body) = match (method.as_str(), gets) {
            ("GET", 1) => ("404 Not Found", r#"{"error":"sprite_not_found"}"#),
            ("POST", _) => ("400 Bad Request", r#"{"error":"sprite_already_exists"}"#),
            _ => ("200 OK", r#"{"name":"contended"}"#),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let sprite = client(&url).get_or_create_sprite("contended").unwrap();
    assert_eq!(sprite.name(), "contended");
    let requests = log.lock().unwrap().clone();
    let methods: Vec<_> = requests
        .iter()
        .map(|r| r.split(' ').next().unwrap())
        .collect();
    assert_eq!(methods, ["GET", "POST", "GET"], "{requests:?}");

    // Any other error on the first GET is returned, and nothing is created.
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    let (url, _server) = serve(move |request, _, mut stream| {
        if request.method == "POST" {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        let _ = write!(
            stream,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    });
    let err = client(&url).get_or_create_sprite("x").unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(500));
    assert_eq!(posts.load(Ordering::SeqCst), 0);
}

#[test]
fn seeking_works_with_a_server_that_ignores_ranges() {
    let _watchdog = common::Watchdog::arm("no ranges");
    let content: Vec<u8> = (0..=255u8).cycle().take(1_000_000).collect();
    let body = content.clone();
    // Always the whole file with 200, whatever Range says.
    let (url, _server) = serve(move |_, _, mut stream| {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(&body);
    });
    use std::io::{Seek, SeekFrom};
    let mut file = client(&url).sprite("s").fs().open("/f").unwrap();
    let mut buf = [0u8; 4];
    for offset in [700_000u64, 10, 999_998] {
        file.seek(SeekFrom::Start(offset)).unwrap();
        let n = file.read(&mut buf).unwrap();
        assert!(n > 0);
        assert_eq!(
            &buf[..n],
            &content[offset as usize..offset as usize + n],
            "at {offset}"
        );
    }
    // Past the end: nothing, as std reads nothing there.
    file.seek(SeekFrom::Start(2_000_000)).unwrap();
    assert_eq!(file.read(&mut buf).unwrap(), 0);
    assert_eq!(file.seek(SeekFrom::End(-1)).unwrap(), 999_999);
}

#[test]
fn a_body_that_stalls_is_timed_out_not_would_block() {
    let _watchdog = common::Watchdog::arm("stalled body");
    // Headers and 10 bytes of a 1000-byte body, then nothing.
    let (url, _server) = serve(|_, _, mut stream| {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"
        );
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(10));
    });
    let client = Client::builder()
        .base_url(&url)
        .token("t")
        .http_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut file = client.sprite("s").fs().open("/f").unwrap();
    let mut buf = [0u8; 100];
    let started = Instant::now();
    let mut got = 0;
    let err = loop {
        match file.read(&mut buf) {
            Ok(n) => got += n,
            Err(e) => break e,
        }
    };
    assert_eq!(got, 10);
    // A blocking Read never says WouldBlock: a stalled server is a timeout.
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(matches!(Error::from_io(&err), Some(Error::Transport(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
}
