//! TLS for HTTP (through ureq) and for the WebSocket (done here): the platform's library with
//! the `native-tls` feature (the default), rustls with the `rustls` feature. One configuration
//! serves both, so a certificate that HTTP accepts is accepted by exec too.

#[cfg(any(feature = "rustls", feature = "native-tls"))]
use crate::error::TransportError;
use crate::error::{Error, Result};
use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(any(feature = "rustls", feature = "native-tls"))]
use std::sync::Arc;

/// The TLS configuration of one [`Client`](crate::Client).
#[derive(Clone)]
pub(crate) enum Tls {
    #[cfg(feature = "rustls")]
    Rustls(Arc<rustls::ClientConfig>),
    #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
    Native(Arc<native_tls::TlsConnector>),
    /// Built without either feature: only `http://` URLs work.
    #[cfg_attr(any(feature = "rustls", feature = "native-tls"), allow(dead_code))]
    Unavailable,
}

impl Tls {
    /// The default roots (the platform's with native-tls, Mozilla's with rustls) and the
    /// certificate authorities in `extra_roots`, each a PEM text of one or more certificates.
    pub(crate) fn new(extra_roots: &[impl AsRef<[u8]>]) -> Result<Tls> {
        // Split and decoded the same way whatever the backend, so both reject the same input.
        let mut blocks = Vec::new();
        for (index, pem) in extra_roots.iter().enumerate() {
            blocks.extend(
                pem_certificates(pem.as_ref())
                    .map_err(|e| Error::Config(format!("root certificate #{}: {e}", index + 1)))?
                    .into_iter()
                    .map(|block| (index + 1, block)),
            );
        }
        #[cfg(feature = "rustls")]
        {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for (n, block) in blocks {
                let der = CertificateDer::from_pem_slice(block)
                    .map_err(|e| Error::Config(format!("root certificate #{n}: {e}")))?;
                roots.add(der).map_err(|e| {
                    Error::Config(format!(
                        "root certificate #{n} is not a usable certificate: {e}"
                    ))
                })?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config(format!("TLS initialisation failed: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Tls::Rustls(Arc::new(config)))
        }
        #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
        {
            let mut builder = native_tls::TlsConnector::builder();
            for (n, block) in blocks {
                let cert = native_tls::Certificate::from_pem(block).map_err(|e| {
                    Error::Config(format!(
                        "root certificate #{n} is not a usable certificate: {e}"
                    ))
                })?;
                builder.add_root_certificate(cert);
            }
            let connector = builder
                .build()
                .map_err(|e| Error::Config(format!("TLS initialisation failed: {e}")))?;
            Ok(Tls::Native(Arc::new(connector)))
        }
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        {
            if blocks.is_empty() {
                Ok(Tls::Unavailable)
            } else {
                Err(Error::Config(
                    "a root certificate needs the `native-tls` or `rustls` feature of \
                     sprites-blocking"
                        .into(),
                ))
            }
        }
    }

    pub(crate) fn available(&self) -> bool {
        !matches!(self, Tls::Unavailable)
    }

    /// Gives ureq the same configuration.
    pub(crate) fn configure(&self, builder: ureq::AgentBuilder) -> ureq::AgentBuilder {
        match self {
            #[cfg(feature = "rustls")]
            Tls::Rustls(config) => builder.tls_config(config.clone()),
            #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
            Tls::Native(connector) => builder.tls_connector(connector.clone()),
            Tls::Unavailable => builder,
        }
    }

    /// A TLS session with `host` over `tcp`, handshake done (bounded by `tcp`'s timeouts).
    pub(crate) fn connect(&self, host: &str, tcp: TcpStream) -> Result<Stream> {
        let context = format!("TLS handshake with {host}");
        match self {
            #[cfg(feature = "rustls")]
            Tls::Rustls(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| Error::Config(format!("{host:?} is not a valid TLS name: {e}")))?;
                let mut conn =
                    rustls::ClientConnection::new(config.clone(), name).map_err(|e| {
                        TransportError::new(
                            io::ErrorKind::InvalidData,
                            context.clone(),
                            Some(Box::new(e)),
                        )
                    })?;
                let mut tcp = tcp;
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp)
                        .map_err(|e| tls_io_error(context.clone(), e))?;
                }
                Ok(Stream::Rustls(Box::new(rustls::StreamOwned::new(
                    conn, tcp,
                ))))
            }
            #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
            Tls::Native(connector) => match connector.connect(host, tcp) {
                Ok(tls) => Ok(Stream::Native(Box::new(tls))),
                Err(native_tls::HandshakeError::Failure(e)) => {
                    Err(
                        TransportError::new(io::ErrorKind::InvalidData, context, Some(Box::new(e)))
                            .into(),
                    )
                }
                // Only a non-blocking socket stops mid-handshake, and this one blocks (with
                // timeouts, which surface as Failure).
                Err(native_tls::HandshakeError::WouldBlock(_)) => {
                    Err(TransportError::new(io::ErrorKind::TimedOut, context, None).into())
                }
            },
            Tls::Unavailable => {
                drop(tcp);
                Err(Error::Config(format!(
                    "{context}: https needs the `native-tls` or `rustls` feature of sprites-blocking"
                )))
            }
        }
    }
}

/// A handshake's I/O error: an invalid certificate or alert arrives as `InvalidData` wrapping
/// rustls' error; timeouts and resets keep their kind.
#[cfg(feature = "rustls")]
fn tls_io_error(context: String, err: io::Error) -> Error {
    TransportError::io(context, err).into()
}

const PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const PEM_END: &[u8] = b"-----END CERTIFICATE-----";

/// The `CERTIFICATE` blocks of a PEM text, each from its `BEGIN` line to its `END` line. Text
/// around and between them (comments, as in a CA bundle) is ignored; other kinds of block (a
/// private key) are refused, since they are surely not what the caller meant to trust.
fn pem_certificates(pem: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(begin) = find(rest, b"-----BEGIN ") {
        rest = &rest[begin..];
        if !rest.starts_with(PEM_BEGIN) {
            let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
            return Err(format!(
                "a PEM block other than a certificate: {}",
                String::from_utf8_lossy(line).trim_end()
            ));
        }
        let Some(end) = find(rest, PEM_END) else {
            return Err("a PEM certificate without its END line".into());
        };
        let (block, after) = rest.split_at(end + PEM_END.len());
        blocks.push(block);
        rest = after;
    }
    if blocks.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(blocks)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A TCP stream, with or without TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "rustls")]
    Rustls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
    Native(Box<native_tls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket under the TLS session.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            #[cfg(feature = "rustls")]
            Stream::Rustls(tls) => tls.get_ref(),
            #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
            Stream::Native(tls) => tls.get_ref(),
        }
    }
}

/// Writes to a rustls session without ever reading from the socket.
///
/// `rustls::StreamOwned`'s own `write` and `flush` call `complete_io`, which reads (and
/// decrypts into rustls' buffer) whenever the socket cannot take more. A command's writer thread
/// would then take incoming bytes that the reader thread, waiting on the socket with poll(2),
/// never sees: the reader sleeps on data already here until more arrives or the keepalive
/// limit passes. Reads belong to the reader alone; this only encrypts and sends.
#[cfg(feature = "rustls")]
fn rustls_write(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: &[u8],
) -> io::Result<usize> {
    let taken = tls.conn.writer().write(buf)?;
    match rustls_send_queued(tls) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        // rustls' buffer is at its limit: wait for room in the socket (there may be some by
        // now; the wait then ends at once).
        _ if taken == 0 && !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
        // Sent, or queued for the next write or flush.
        _ => Ok(taken),
    }
}

/// Sends what rustls has encrypted and queued, until the socket blocks (`WouldBlock`).
#[cfg(feature = "rustls")]
fn rustls_send_queued(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> io::Result<()> {
    while tls.conn.wants_write() {
        if tls.conn.write_tls(&mut tls.sock)? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    tls.sock.flush()
}

// EINTR is retried here, once for every caller: the blocking handshake (whose `read` with a
// timeout can be interrupted when the process reaps children, e.g. an embedded sprites-local) and
// the non-blocking data path alike.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Stream::Plain(s) => s.read(buf),
                #[cfg(feature = "rustls")]
                Stream::Rustls(s) => s.read(buf),
                #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
                Stream::Native(s) => s.read(buf),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Stream::Plain(s) => s.write(buf),
                #[cfg(feature = "rustls")]
                Stream::Rustls(s) => rustls_write(s, buf),
                #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
                Stream::Native(s) => s.write(buf),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "rustls")]
            Stream::Rustls(s) => rustls_send_queued(s),
            #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
            Stream::Native(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----";

    #[test]
    fn pem_certificates_splits_bundles_and_refuses_what_is_not_a_certificate() {
        assert_eq!(
            pem_certificates(BLOCK.as_bytes()).unwrap(),
            [BLOCK.as_bytes()]
        );
        let bundle = format!("# one\n{BLOCK}\n\n# two\r\n{BLOCK}\r\ntrailing text\n");
        assert_eq!(pem_certificates(bundle.as_bytes()).unwrap().len(), 2);

        let empty = pem_certificates(b"").unwrap_err();
        assert!(empty.contains("no PEM certificate"), "{empty}");
        let key = pem_certificates(b"-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----")
            .unwrap_err();
        assert!(key.contains("-----BEGIN PRIVATE KEY-----"), "{key}");
        // A key after a certificate is refused too, not skipped.
        let mixed = format!("{BLOCK}\n-----BEGIN EC PRIVATE KEY-----\n");
        assert!(pem_certificates(mixed.as_bytes()).is_err());
        let open = pem_certificates(b"-----BEGIN CERTIFICATE-----\nQUJD\n").unwrap_err();
        assert!(open.contains("without its END line"), "{open}");
    }

    /// The test CA of the end-to-end tests (`tests/data/tls/make.sh`): a real certificate.
    /// (`tests/` is not packaged, and neither are unit tests.)
    const CA: &str = include_str!("../tests/data/tls/ca.pem");

    #[test]
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    fn real_certificates_are_accepted_alone_and_in_bundles() {
        let tls = Tls::new(&[CA]).expect("the test CA");
        assert!(tls.available());
        let other = include_str!("../tests/data/tls/other.pem");
        let bundle = format!("# test CA\n{CA}\n# another\n{other}");
        assert!(Tls::new(&[bundle.as_str(), CA]).is_ok());
    }

    #[test]
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    fn a_block_that_is_no_certificate_is_refused_and_numbered() {
        // Well-formed PEM around three bytes that are no DER certificate; both backends refuse
        // it in the same words, naming which argument it came from.
        let err = Tls::new(&[CA, BLOCK]).err().expect("refused");
        assert!(
            matches!(&err, Error::Config(m) if m.starts_with("root certificate #2 is not a usable certificate")),
            "{err}"
        );
    }

    #[test]
    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    fn without_a_tls_feature_a_root_certificate_is_a_configuration_error() {
        let none: [&str; 0] = [];
        assert!(!Tls::new(&none).unwrap().available());
        let err = Tls::new(&[CA]).err().expect("refused");
        assert!(
            matches!(&err, Error::Config(m) if m.contains("needs the `native-tls` or `rustls` feature")),
            "{err}"
        );
    }

    #[test]
    fn no_extra_roots_is_the_default_configuration() {
        let none: [&[u8]; 0] = [];
        assert!(Tls::new(&none).is_ok());
        let err = Tls::new(&[b"junk".as_slice()])
            .err()
            .expect("junk is refused");
        assert!(
            matches!(&err, Error::Config(m) if m.starts_with("root certificate #1: ")),
            "{err}"
        );
    }
}

/// The reader/writer split of a command's WebSocket (ws.rs) waits for incoming data with
/// poll(2) on the socket, with the TLS session unlocked: so whatever the writer does must leave
/// incoming bytes in the socket for the reader to see, and a flush must send all it holds.
// `cfg(test)` on its own, which cargo-mutants knows for test code and leaves alone.
#[cfg(test)]
#[cfg(all(target_os = "linux", any(feature = "rustls", feature = "native-tls")))]
mod duplex_tests {
    use super::*;
    use crate::sys::{self, Interest};
    use std::net::TcpListener;
    use std::thread::JoinHandle;
    use std::time::Duration;

    const CA: &str = include_str!("../tests/data/tls/ca.pem");
    const LIMIT: Duration = Duration::from_secs(10);

    /// A TLS server (native-tls, a dev-dependency, with the test certificate) that runs `serve`
    /// on its end of one connection, and a client `Stream` connected to it.
    fn tls_pair<T: Send + 'static>(
        serve: impl FnOnce(native_tls::TlsStream<TcpStream>) -> io::Result<T> + Send + 'static,
    ) -> (Stream, JoinHandle<io::Result<T>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let identity = native_tls::Identity::from_pkcs8(
                include_bytes!("../tests/data/tls/server.pem"),
                include_bytes!("../tests/data/tls/server.key"),
            )
            .map_err(io::Error::other)?;
            let acceptor = native_tls::TlsAcceptor::new(identity).map_err(io::Error::other)?;
            let (tcp, _) = listener.accept()?;
            tcp.set_read_timeout(Some(LIMIT))?;
            tcp.set_write_timeout(Some(LIMIT))?;
            serve(acceptor.accept(tcp).map_err(io::Error::other)?)
        });
        let tcp = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        tcp.set_write_timeout(Some(LIMIT)).unwrap();
        let stream = Tls::new(&[CA]).unwrap().connect("localhost", tcp).unwrap();
        (stream, server)
    }

    #[test]
    fn a_write_that_cannot_go_out_leaves_incoming_data_for_the_reader() {
        let (expect, expected) = crossbeam_channel::bounded::<usize>(1);
        // The server greets, then reads nothing until told how much to read, so the client's
        // writes pile up until its socket is full; then it counts what arrives.
        let (mut stream, server) = tls_pair(move |mut tls| {
            tls.write_all(b"hello")?;
            tls.flush()?;
            let Ok(total) = expected.recv_timeout(LIMIT * 3) else {
                return Ok((0, 0));
            };
            // To the end of the stream, which the client's shutdown marks (without a
            // close_notify, which OpenSSL reports as an error).
            let mut buf = vec![0u8; 1 << 20];
            let mut received = 0;
            while let Ok(n @ 1..) = tls.read(&mut buf) {
                received += n;
            }
            Ok((total, received))
        });
        assert!(
            sys::wait(stream.tcp(), Interest::Read, LIMIT).unwrap(),
            "the greeting arrives"
        );
        stream.tcp().set_nonblocking(true).unwrap();

        let chunk = vec![7u8; 64 << 10];
        let mut written = 0usize;
        for writes in 0.. {
            assert!(writes < 10_000, "the socket never filled");
            match stream.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(
            sys::wait(stream.tcp(), Interest::Read, Duration::ZERO).unwrap(),
            "a blocked write took the incoming bytes out of the socket, where the reader's \
             poll(2) cannot see them"
        );

        // The reader gets them, though the write side is still blocked.
        let mut greeting = Vec::new();
        let mut buf = [0u8; 16];
        while greeting.len() < 5 {
            match stream.read(&mut buf) {
                Ok(0) => panic!("the server closed early"),
                Ok(n) => greeting.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(sys::wait(stream.tcp(), Interest::Read, LIMIT).unwrap());
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(greeting, b"hello");

        // Once the server reads, flushing sends every byte the writes took.
        expect.send(written).unwrap();
        loop {
            match stream.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(sys::wait(stream.tcp(), Interest::Write, LIMIT).unwrap());
                }
                Err(e) => panic!("flush: {e}"),
            }
        }
        stream.tcp().shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            server.join().unwrap().unwrap(),
            (written, written),
            "what the server received is exactly what the writes said they took"
        );
    }

    #[test]
    fn a_write_to_a_connection_the_server_dropped_fails() {
        // The server completes the handshake and goes away without a word.
        let (mut stream, server) = tls_pair(|tls| {
            drop(tls);
            Ok(())
        });
        server.join().unwrap().unwrap();
        // The first write may go out before the reset comes back; a later one must fail, with
        // the socket's error rather than a "try again".
        let failed = (0..100).find_map(|_| stream.write(&[0u8; 1024]).err());
        let kind = failed.expect("a write failed").kind();
        assert!(
            matches!(
                kind,
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{kind:?}"
        );
    }
}

/// `Stream`'s read and write retry EINTR and return every other error: a blocked socket call
/// interrupted by a signal (an embedded sprites-local reaping its children, say) is no failure.
#[cfg(test)]
#[cfg(target_os = "linux")]
mod eintr_tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    const LIMIT: Duration = Duration::from_secs(10);

    /// A connected pair on loopback: (client, server).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Writes to `socket` until it takes no more for now (its peer reads nothing); returns how
    /// much.
    fn fill(socket: &TcpStream) -> usize {
        socket.set_nonblocking(true).unwrap();
        let chunk = vec![1u8; 64 << 10];
        let mut filled = 0usize;
        loop {
            match (&*socket).write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(filled < 512 << 20, "the socket never filled");
        }
        socket.set_nonblocking(false).unwrap();
        filled
    }

    /// SIGUSR2 with a handler that does nothing and no SA_RESTART: a blocked read(2) or
    /// write(2) in the thread it is sent to returns EINTR.
    fn install_interrupting_handler() {
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler is
        // async-signal-safe (it does nothing).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
                0
            );
        }
    }

    /// Runs `op` on a thread, interrupts it with signals for a while (it is blocked by then, or
    /// soon), then runs `unblock` and returns what `op` returned.
    fn interrupted<T: Send + 'static>(
        op: impl FnOnce() -> T + Send + 'static,
        unblock: impl FnOnce(),
    ) -> T {
        install_interrupting_handler();
        let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
            let _ = done_tx.send(op());
        });
        let tid = tid_rx.recv_timeout(LIMIT).unwrap();
        // Twenty signals 20 ms apart: the thread is in its blocking call for most of them. An
        // operation that gives up on EINTR has answered by the end.
        for _ in 0..20 {
            // SAFETY: the thread is alive until it has sent its result, which is not yet.
            unsafe { libc::pthread_kill(tid, libc::SIGUSR2) };
            if let Ok(early) = done_rx.recv_timeout(Duration::from_millis(20)) {
                thread.join().unwrap();
                return early;
            }
        }
        unblock();
        let result = done_rx.recv_timeout(LIMIT).expect("the operation finished");
        thread.join().unwrap();
        result
    }

    #[test]
    fn a_read_interrupted_by_a_signal_is_retried() {
        let (client, mut server) = pair();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let mut stream = Stream::Plain(client);
        let read = interrupted(
            move || {
                let mut buf = [0u8; 8];
                stream.read(&mut buf).map(|n| buf[..n].to_vec())
            },
            || server.write_all(b"data").unwrap(),
        );
        assert_eq!(read.unwrap(), b"data");
    }

    #[test]
    fn a_write_interrupted_by_a_signal_is_retried() {
        let (client, mut server) = pair();
        let filled = fill(&client);
        client.set_write_timeout(Some(LIMIT)).unwrap();
        let chunk = vec![1u8; 64 << 10];
        let mut stream = Stream::Plain(client);
        let written = interrupted(
            move || stream.write(&chunk),
            || {
                // Drain everything, which makes room for the blocked write.
                server
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut sink = vec![0u8; 1 << 20];
                let mut drained = 0usize;
                while drained < filled {
                    drained += server.read(&mut sink).unwrap();
                }
            },
        );
        assert!(written.unwrap() > 0);
    }

    #[test]
    fn other_errors_are_returned_not_retried() {
        let (client, server) = pair();
        client
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let (done_tx, done_rx) = crossbeam_channel::bounded(2);
        // On a thread, so that a retry loop fails the test instead of hanging it.
        std::thread::spawn(move || {
            let mut stream = Stream::Plain(client);
            // Nothing comes: the read times out (WouldBlock on Linux) at once.
            let read = stream.read(&mut [0u8; 8]).err().map(|e| e.kind());
            let _ = done_tx.send(read);
            // The peer is gone: a write is answered with a reset, and the next one fails.
            drop(server);
            assert_eq!(stream.read(&mut [0u8; 8]).unwrap(), 0, "the peer's FIN");
            let written = (0..100)
                .find_map(|_| stream.write(&[0u8; 1024]).err())
                .map(|e| e.kind());
            let _ = done_tx.send(written);
        });
        let read = done_rx.recv_timeout(LIMIT).expect("the read returned");
        assert_eq!(read, Some(io::ErrorKind::WouldBlock));
        let written = done_rx.recv_timeout(LIMIT).expect("the write returned");
        assert!(
            matches!(
                written,
                Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
            ),
            "{written:?}"
        );
    }
}
