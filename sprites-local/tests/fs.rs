//! The filesystem API end to end: a real server on loopback driven with raw HTTP (to cut
//! bodies short, pipeline requests and read exact bytes), plus ureq for the early-refusal
//! case. Every wait is bounded by socket timeouts or explicit deadlines.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{create, enc, read_target, write_target, Resp, ServerProcess, TempDir};
use sprites_local::{Runtime, Server, ServerHandle};

const TOKEN: &str = "secret";
const TIMEOUT: Duration = Duration::from_secs(30);

fn start(tag: &str) -> (ServerHandle, TempDir) {
    let dir = TempDir::new(tag);
    let s = Server::builder()
        .token(TOKEN)
        .data_dir(dir.0.join("data"))
        .runtime(Runtime::Host)
        .start()
        .unwrap();
    std::fs::create_dir_all(dir.0.join("files")).unwrap();
    (s, dir)
}

/// One client connection that can carry several requests (keep-alive, pipelining).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Sends a request head with the token and `extra` header lines (each ending in CRLF).
    fn head(&mut self, method: &str, target: &str, extra: &str) {
        let h = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n"
        );
        self.send(h.as_bytes());
    }

    /// Sends a request with a Content-Length body and reads the response.
    fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Resp {
        self.head(
            method,
            target,
            &format!("Content-Length: {}\r\n", body.len()),
        );
        self.send(body);
        self.response(method == "HEAD")
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.s.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads one response (`Content-Length` bodies only, which is all this API sends).
    fn response(&mut self, head_only: bool) -> Resp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill() > 0, "connection closed before a response");
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        self.buf.drain(..end + 4);
        let mut resp = Resp::from_head(head);
        let status = resp.status;
        if status >= 200 && status != 204 && !head_only {
            let len: usize = resp.header("content-length").unwrap().parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill() > 0, "connection closed inside a body");
            }
            resp.body = self.buf.drain(..len).collect();
        }
        if status >= 200 {
            assert_eq!(resp.header("sprite-version"), Some("0.1.0"));
        }
        resp
    }

    /// True if the server has closed the connection (EOF or reset) with nothing more sent.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// Deterministic test data: byte `i` of a stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn pattern_vec(from: u64, n: usize) -> Vec<u8> {
    (from..from + n as u64).map(pattern).collect()
}

#[test]
fn a_cut_upload_keeps_the_old_file_and_leaves_no_temp_file() {
    let (s, dir) = start("cut");
    create(s.addr(), "s");
    let keep = dir.p("files/keep.txt");
    let mut c = Conn::new(s.addr());
    assert_eq!(
        c.request("PUT", &write_target("s", &keep, ""), b"old contents")
            .status,
        200
    );

    // Half-closed mid-chunk, mid-size-line and short of Content-Length. The server removes
    // its temp file before it answers, so once the answer is here the directory is final.
    let cuts: [(&str, &[u8]); 3] = [
        ("Transfer-Encoding: chunked\r\n", b"10000\r\nNNNNNNNN"),
        ("Transfer-Encoding: chunked\r\n", b"4\r\nNNNN\r\n1"),
        ("Content-Length: 100000\r\n", b"NNNNNNNNNNNN"),
    ];
    for (framing, partial) in cuts {
        let mut c = Conn::new(s.addr());
        c.head("PUT", &write_target("s", &keep, ""), framing);
        c.send(partial);
        c.s.shutdown(Shutdown::Write).unwrap();
        let r = c.response(false);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], "invalid_request");
        assert_eq!(std::fs::read_to_string(&keep).unwrap(), "old contents");
        assert_eq!(dir.names("files"), ["keep.txt"], "after {partial:?}");
    }

    // Dropped outright, as a crashing client would (a reset, not a FIN): nothing observable
    // marks the moment the server notices, so look for a bounded while.
    let mut c = Conn::new(s.addr());
    c.head(
        "PUT",
        &write_target("s", &keep, ""),
        "Transfer-Encoding: chunked\r\n",
    );
    c.send(b"100000\r\n");
    c.send(&vec![b'N'; 300_000]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&c.s);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setting SO_LINGER on a socket we own, with a valid struct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.names("files") != ["keep.txt"] {
        assert!(Instant::now() < deadline, "left: {:?}", dir.names("files"));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "old contents");
}

#[test]
fn durable_writes_commit_like_default_ones() {
    // `--durable-writes` adds an fsync before the rename (not observable here); what must not
    // change is the answer, the content, the exact mode and the atomic replacement.
    let dir = TempDir::new("durable");
    let s = Server::builder()
        .token(TOKEN)
        .data_dir(dir.0.join("data"))
        .runtime(Runtime::Host)
        .durable_writes(true)
        .start()
        .unwrap();
    std::fs::create_dir_all(dir.0.join("files")).unwrap();
    create(s.addr(), "s");
    let target = dir.p("files/notes.txt");
    let mut c = Conn::new(s.addr());
    for content in [&b"first"[..], b"second, longer"] {
        let r = c.request("PUT", &write_target("s", &target, "&mode=0600"), content);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["size"], content.len());
        assert_eq!(r.json()["mode"], "0600");
        assert_eq!(std::fs::read(&target).unwrap(), content);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(dir.names("files"), ["notes.txt"]);
}

#[test]
fn ranges_give_206_with_the_right_bytes() {
    let (s, dir) = start("range");
    create(s.addr(), "s");
    let f = dir.p("files/data.bin");
    let data = pattern_vec(0, 1000);
    let mut c = Conn::new(s.addr());
    assert_eq!(
        c.request("PUT", &write_target("s", &f, ""), &data).status,
        200
    );

    // All on one connection: file responses keep it alive.
    let cases: [(&str, u16, usize, usize); 5] = [
        ("bytes=100-", 206, 100, 1000),
        ("bytes=10-19", 206, 10, 20),
        ("bytes=-5", 206, 995, 1000),
        ("bytes=990-5000", 206, 990, 1000),
        ("bytes=5-2", 200, 0, 1000),
    ];
    for (range, status, from, to) in cases {
        c.head("GET", &read_target("s", &f), &format!("Range: {range}\r\n"));
        let r = c.response(false);
        assert_eq!(r.status, status, "{range}");
        assert!(r.body == data[from..to], "{range}");
        if status == 206 {
            assert_eq!(
                r.header("content-range").unwrap(),
                format!("bytes {from}-{}/1000", to - 1)
            );
        }
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    }
    c.head("GET", &read_target("s", &f), "Range: bytes=1000-\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));

    let r = c.request("HEAD", &read_target("s", &f), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let r = c.request("GET", &read_target("s", &f), b"");
    assert!(r.status == 200 && r.body == data);
}

/// ureq sends its whole body before it reads anything, so a server that refuses early and
/// simply closes makes it fail with a write error. These must come back as statuses.
#[test]
fn early_refusals_reach_a_client_that_sends_its_whole_body_first() {
    let (s, dir) = start("refuse");
    create(s.addr(), "s");
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let base = format!("http://{}", s.addr());
    let big = vec![b'x'; 48 << 20];
    let target = dir.p("files/never");
    let cases = [
        (
            write_target("nope", &target, ""),
            TOKEN,
            404,
            "sprite_not_found",
        ),
        (write_target("s", &target, ""), "wrong", 401, "unauthorized"),
        (
            write_target("s", &dir.p("files/no/dir/f"), "&mkdirParents=false"),
            TOKEN,
            404,
            "no such file or directory",
        ),
        (
            write_target("s", &target, "&mode=0999"),
            TOKEN,
            400,
            "invalid argument: invalid mode \"0999\": expected octal such as 0644",
        ),
    ];
    for (i, (path, token, status, error)) in cases.iter().enumerate() {
        let started = Instant::now();
        let req = agent
            .put(&format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {token}"));
        // Content-Length and chunked (a reader) bodies.
        let result = if i % 2 == 0 {
            req.send_bytes(&big)
        } else {
            req.send(&big[..])
        };
        match result {
            Err(ureq::Error::Status(code, resp)) => {
                assert_eq!(code, *status, "{path}");
                assert_eq!(resp.header("connection"), Some("close"));
                let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).unwrap();
                assert_eq!(v["error"], *error, "{path}");
            }
            other => panic!("{path}: expected status {status}, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
    }
    assert!(dir.names("files").is_empty());
}

#[test]
fn keep_alive_and_100_continue_around_streamed_writes() {
    let (s, dir) = start("keep");
    create(s.addr(), "s");
    let a = dir.p("files/a");
    let mut c = Conn::new(s.addr());

    // A chunked write in small chunks with a request pipelined right behind it.
    let mut raw = format!(
        "PUT {} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n",
        write_target("s", &a, "&mode=0600")
    )
    .into_bytes();
    let data = pattern_vec(0, 100_000);
    for chunk in data.chunks(777) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw.extend_from_slice(
        format!(
            "GET {} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
            read_target("s", &a)
        )
        .as_bytes(),
    );
    c.send(&raw);
    let w = c.response(false);
    assert_eq!(w.status, 200);
    assert_eq!(
        w.json(),
        serde_json::json!({"path": a, "size": 100_000, "mode": "0600"})
    );
    let r = c.response(false);
    assert!(r.status == 200 && r.body == data);

    // Expect: 100-continue: the interim answer comes only for an accepted write.
    c.head(
        "PUT",
        &write_target("s", &a, ""),
        "Expect: 100-continue\r\nContent-Length: 5\r\n",
    );
    assert_eq!(c.response(false).status, 100);
    c.send(b"hello");
    assert_eq!(c.response(false).status, 200);
    assert_eq!(std::fs::read(&a).unwrap(), b"hello");
    let r = c.request(
        "GET",
        &format!("/v1/sprites/s/fs/list?path={}", enc(&a)),
        b"",
    );
    assert_eq!(r.json()["entries"][0]["size"], 5);

    c.head(
        "PUT",
        &write_target("ghost", &a, ""),
        "Expect: 100-continue\r\nContent-Length: 5\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 404, "refused without asking for the body");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn operations_and_their_errors_over_http() {
    let (s, dir) = start("ops");
    create(s.addr(), "s");
    let mut c = Conn::new(s.addr());
    let wd = dir.p("files");
    let q = |path: &str| format!("path={}&workingDir={}", enc(path), enc(&wd));
    for (name, body) in [("d/x.txt", "xx"), ("d/sub/y.txt", "y"), ("top.txt", "t")] {
        let r = c.request(
            "PUT",
            &format!("/v1/sprites/s/fs/write?{}&mkdirParents=true", q(name)),
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    // Without mkdirParents a missing parent is ENOENT (the JS SDK's mkdir relies on it). The
    // refusal comes before the body is read, so it ends its connection: use one of its own.
    let r = Conn::new(s.addr()).request(
        "PUT",
        &format!("/v1/sprites/s/fs/write?{}", q("nodir/z.txt")),
        b"z",
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "ENOENT");
    let fs_err = |r: &Resp, status: u16, code: &str, path: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(
            (v["code"].as_str(), v["path"].as_str()),
            (Some(code), Some(path))
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    };

    // read
    let r = c.request("GET", &format!("/v1/sprites/s/fs/read?{}", q("nope")), b"");
    fs_err(&r, 404, "ENOENT", &dir.p("files/nope"));
    let r = c.request("GET", &format!("/v1/sprites/s/fs/read?{}", q("d")), b"");
    fs_err(&r, 400, "EISDIR", &dir.p("files/d"));

    // list: a directory, a file, the working directory by default
    let r = c.request("GET", &format!("/v1/sprites/s/fs/list?{}", q("d")), b"");
    let v = r.json();
    assert_eq!(
        (v["path"].as_str(), v["count"].as_u64()),
        (Some(&*dir.p("files/d")), Some(2))
    );
    assert_eq!(v["entries"][0]["name"], "sub");
    assert_eq!(v["entries"][0]["type"], "directory");
    assert_eq!(v["entries"][0]["isDir"], true);
    assert_eq!(v["entries"][1]["path"], dir.p("files/d/x.txt"));
    assert_eq!(v["entries"][1]["size"], 2);
    let r = c.request(
        "GET",
        &format!("/v1/sprites/s/fs/list?{}&recursive=true", q("d")),
        b"",
    );
    assert_eq!(r.json()["count"], 3);
    let r = c.request(
        "GET",
        &format!("/v1/sprites/s/fs/list?workingDir={}", enc(&wd)),
        b"",
    );
    assert_eq!(r.json()["count"], 2);
    let r = c.request(
        "GET",
        &format!("/v1/sprites/s/fs/list?{}", q("top.txt")),
        b"",
    );
    let v = r.json();
    assert_eq!(v["count"], 1);
    assert_eq!(v["entries"][0]["path"], dir.p("files/top.txt"));

    // delete
    let r = c.request(
        "DELETE",
        &format!("/v1/sprites/s/fs/delete?{}", q("d")),
        b"",
    );
    fs_err(&r, 409, "ENOTEMPTY", &dir.p("files/d"));
    let r = c.request(
        "DELETE",
        "/v1/sprites/s/fs/delete?path=/&recursive=true",
        b"",
    );
    fs_err(&r, 400, "EINVAL", "/");

    // rename, copy, chmod (JSON bodies; unknown fields ignored, mode as string or number)
    let post = |c: &mut Conn, op: &str, body: serde_json::Value| {
        c.request(
            "POST",
            &format!("/v1/sprites/s/fs/{op}"),
            body.to_string().as_bytes(),
        )
    };
    let r = post(
        &mut c,
        "rename",
        serde_json::json!({"source":"top.txt","dest":"d/top2.txt","workingDir":wd,"extra":1}),
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"source": dir.p("files/top.txt"), "dest": dir.p("files/d/top2.txt")})
    );
    let r = post(
        &mut c,
        "rename",
        serde_json::json!({"source":"ghost","dest":"x","workingDir":wd}),
    );
    fs_err(&r, 404, "ENOENT", &dir.p("files/ghost"));
    let r = post(
        &mut c,
        "copy",
        serde_json::json!({"source":"d","dest":"e","workingDir":wd}),
    );
    fs_err(&r, 400, "EISDIR", &dir.p("files/d"));
    let r = post(
        &mut c,
        "copy",
        serde_json::json!({"source":"d","dest":"e","workingDir":wd,"recursive":true}),
    );
    let v = r.json();
    assert_eq!(
        (v["count"].as_u64(), v["totalBytes"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(v["copied"][0]["dest"], dir.p("files/e"));
    assert_eq!(
        std::fs::read_to_string(dir.0.join("files/e/sub/y.txt")).unwrap(),
        "y"
    );
    let r = post(
        &mut c,
        "chmod",
        serde_json::json!({"path":"e","workingDir":wd,"mode":493,"recursive":true}),
    );
    let v = r.json();
    assert_eq!(
        (v["mode"].as_str(), v["count"].as_u64()),
        (Some("0755"), Some(5))
    );
    let r = post(
        &mut c,
        "chmod",
        serde_json::json!({"path":"e/top2.txt","workingDir":wd,"mode":"600"}),
    );
    assert_eq!(r.json()["affected"][0]["mode"], "0600");
    let r = post(
        &mut c,
        "chmod",
        serde_json::json!({"path":"e","workingDir":wd,"mode":"rwx"}),
    );
    fs_err(&r, 400, "EINVAL", &dir.p("files/e"));
    let r = c.request("POST", "/v1/sprites/s/fs/chmod", b"{not json");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // Request-level errors use the §3.1 body.
    let r = c.request("GET", "/v1/sprites/ghost/fs/list?path=/", b"");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("sprite_not_found"))
    );
    let r = c.request("GET", "/v1/sprites/s/fs/nope", b"");
    assert_eq!(r.status, 404);
    let r = c.request("POST", "/v1/sprites/s/fs/read?path=/", b"");
    assert_eq!(r.status, 405);
    let mut anon = Conn::new(s.addr());
    anon.send(b"GET /v1/sprites/s/fs/list?path=/ HTTP/1.1\r\n\r\n");
    assert_eq!(anon.response(false).status, 401);
}

/// Uploads `len` pattern bytes (chunked in `chunk`-byte chunks, or with Content-Length).
fn upload(c: &mut Conn, target: &str, len: u64, chunked: bool) {
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n".to_owned()
    } else {
        format!("Content-Length: {len}\r\n")
    };
    c.head("PUT", target, &framing);
    let chunk = 64 * 1024;
    let mut frame = Vec::with_capacity(chunk + 16);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(chunk as u64) as usize;
        frame.clear();
        if chunked {
            frame.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        }
        frame.extend((at..at + n as u64).map(pattern));
        if chunked {
            frame.extend_from_slice(b"\r\n");
        }
        c.send(&frame);
        at += n as u64;
    }
    if chunked {
        c.send(b"0\r\n\r\n");
    }
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["size"], len);
}

/// Downloads and checks `len` pattern bytes without holding them.
fn download(c: &mut Conn, target: &str, len: u64) {
    c.head("GET", target, "");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {len}\r\n")),
        "{head}"
    );
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        let n = c.s.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "body ended at {at}");
        assert!(
            buf[..n].iter().zip(at..).all(|(b, i)| *b == pattern(i)),
            "bytes differ near {at}"
        );
        at += n as u64;
    }
}

#[test]
fn a_64_mib_round_trip_runs_in_constant_server_memory() {
    let server = ServerProcess::start();
    create(server.addr, "s");
    let dir = TempDir::new("big");
    let f = dir.p("big.bin");
    let (w, r) = (write_target("s", &f, ""), read_target("s", &f));
    let mut c = Conn::new(server.addr);
    // Warm up: the per-connection and per-request buffers exist from here on.
    upload(&mut c, &w, 1 << 20, true);
    download(&mut c, &r, 1 << 20);
    let (base, _) = server.memory_kib();

    let len = 64u64 << 20;
    for chunked in [true, false] {
        let t = Instant::now();
        upload(&mut c, &w, len, chunked);
        let up = t.elapsed();
        let t = Instant::now();
        download(&mut c, &r, len);
        eprintln!(
            "64 MiB (chunked: {chunked}): upload {:?}, download {:?}",
            up,
            t.elapsed()
        );
    }
    let (rss, peak) = server.memory_kib();
    eprintln!("server RSS: {base} KiB before, {rss} KiB after, peak {peak} KiB");
    assert!(
        peak.saturating_sub(base) < 16 * 1024,
        "server memory grew from {base} KiB to a peak of {peak} KiB"
    );
    assert_eq!(std::fs::metadata(&f).unwrap().len(), len);
    assert_eq!(dir.names(""), ["big.bin"]);
}

#[test]
fn paths_are_validated_not_trusted_blindly() {
    let (s, dir) = start("paths");
    create(s.addr(), "s");
    let mut c = Conn::new(s.addr());
    // Missing or empty path: EINVAL. A NUL byte: EINVAL, not a panic.
    for target in [
        "/v1/sprites/s/fs/read".to_owned(),
        "/v1/sprites/s/fs/read?path=".to_owned(),
        format!("/v1/sprites/s/fs/read?path={}%00x", enc(&dir.p("files"))),
    ] {
        let r = c.request("GET", &target, b"");
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (400, Some("EINVAL")),
            "{target}"
        );
    }
    // Refused before its body: answered, then the connection closes.
    let mut w = Conn::new(s.addr());
    let r = w.request("PUT", "/v1/sprites/s/fs/write?path=%00", b"x");
    assert_eq!(r.status, 400);
    assert!(w.closed());
    // `..` is resolved against the working directory, lexically.
    let r = c.request(
        "PUT",
        &format!(
            "/v1/sprites/s/fs/write?path=./../sub2/../z.txt&workingDir={}",
            enc(&dir.p("files/sub"))
        ),
        b"z",
    );
    assert_eq!(r.json()["path"], dir.p("files/z.txt"));
    assert!(Path::new(&dir.p("files/z.txt")).exists());
}

/// Not a check, a measurement: `cargo test --release -p sprites-local --test fs -- --ignored
/// --nocapture throughput`. 1 GiB up and down through a server process, beside raw loopback
/// TCP. The file goes to `$SPRITES_FS_BENCH_DIR`, else `/dev/shm` (so a disk's fsync speed
/// does not hide the server's own).
#[test]
#[ignore]
fn throughput_1gib() {
    const GIB: u64 = 1 << 30;
    let mib_s = |d: Duration| GIB as f64 / (1 << 20) as f64 / d.as_secs_f64();
    let block = vec![7u8; 256 * 1024];

    // Baseline: raw loopback TCP, same block size.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        while s.read(&mut buf).unwrap() > 0 {}
    });
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    for _ in 0..GIB / block.len() as u64 {
        s.write_all(&block).unwrap();
    }
    drop(s);
    sink.join().unwrap();
    let tcp = t.elapsed();

    let server = ServerProcess::start();
    create(server.addr, "s");
    let dir = std::env::var("SPRITES_FS_BENCH_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let f = format!("{dir}/sprites-fs-bench-{}.bin", std::process::id());
    let mut c = Conn::new(server.addr);

    let t = Instant::now();
    c.head(
        "PUT",
        &write_target("s", &f, ""),
        "Transfer-Encoding: chunked\r\n",
    );
    let mut frame = format!("{:x}\r\n", block.len()).into_bytes();
    frame.extend_from_slice(&block);
    frame.extend_from_slice(b"\r\n");
    for _ in 0..GIB / block.len() as u64 {
        c.send(&frame);
    }
    c.send(b"0\r\n\r\n");
    let sent = t.elapsed();
    assert_eq!(c.response(false).status, 200);
    let up = t.elapsed();
    eprintln!("upload: body sent after {sent:?}, committed after {up:?} (fsync included)");

    let t = Instant::now();
    c.head("GET", &read_target("s", &f), "");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < GIB {
        got += c.s.read(&mut buf).unwrap() as u64;
    }
    let down = t.elapsed();
    let _ = std::fs::remove_file(&f);
    eprintln!(
        "1 GiB: loopback TCP {:.0} MiB/s, upload {:.0} MiB/s, download {:.0} MiB/s ({dir})",
        mib_s(tcp),
        mib_s(up),
        mib_s(down)
    );
}
