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
    // Make room first; a full socket is no error yet, as rustls may still take some of `buf`.
    match rustls_send_queued(tls) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
        _ => {}
    }
    let taken = tls.conn.writer().write(buf)?;
    if taken == 0 && !buf.is_empty() {
        // rustls' send buffer is at its limit and the socket takes nothing.
        return Err(io::ErrorKind::WouldBlock.into());
    }
    // Send what it can now; what stays queued goes with the next write or flush.
    match rustls_send_queued(tls) {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
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
/// incoming bytes in the socket for the reader to see.
#[cfg(all(
    test,
    target_os = "linux",
    any(feature = "rustls", feature = "native-tls")
))]
mod duplex_tests {
    use super::*;
    use crate::sys::{self, Interest};
    use std::net::TcpListener;
    use std::time::Duration;

    const CA: &str = include_str!("../tests/data/tls/ca.pem");
    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_write_that_cannot_go_out_leaves_incoming_data_for_the_reader() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = crossbeam_channel::bounded::<()>(0);
        // A TLS server (native-tls, a dev-dependency) that greets, then reads nothing until
        // released, so the client's writes pile up until its socket is full.
        let server = std::thread::spawn(move || -> io::Result<()> {
            let identity = native_tls::Identity::from_pkcs8(
                include_bytes!("../tests/data/tls/server.pem"),
                include_bytes!("../tests/data/tls/server.key"),
            )
            .map_err(io::Error::other)?;
            let acceptor = native_tls::TlsAcceptor::new(identity).map_err(io::Error::other)?;
            let (tcp, _) = listener.accept()?;
            tcp.set_read_timeout(Some(LIMIT))?;
            tcp.set_write_timeout(Some(LIMIT))?;
            let mut tls = acceptor.accept(tcp).map_err(io::Error::other)?;
            tls.write_all(b"hello")?;
            tls.flush()?;
            let _ = released.recv_timeout(LIMIT * 3);
            Ok(())
        });

        let tcp = TcpStream::connect_timeout(&addr, LIMIT).unwrap();
        tcp.set_read_timeout(Some(LIMIT)).unwrap();
        tcp.set_write_timeout(Some(LIMIT)).unwrap();
        let mut stream = Tls::new(&[CA]).unwrap().connect("localhost", tcp).unwrap();
        assert!(
            sys::wait(stream.tcp(), Interest::Read, LIMIT).unwrap(),
            "the greeting arrives"
        );
        stream.tcp().set_nonblocking(true).unwrap();

        let chunk = vec![7u8; 64 << 10];
        let mut written = 0usize;
        loop {
            match stream.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
            assert!(written < 512 << 20, "the socket never filled");
        }
        // rustls holds what it encrypted and could not send; OpenSSL holds nothing.
        let flushed = stream.flush();
        assert!(
            matches!(&flushed, Ok(()))
                || matches!(&flushed, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{flushed:?}"
        );
        assert!(
            sys::wait(stream.tcp(), Interest::Read, Duration::ZERO).unwrap(),
            "a blocked write took the incoming bytes out of the socket, where the reader's \
             poll(2) cannot see them"
        );

        // And the reader gets them, though the write side is still blocked.
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
        drop(release);
        server.join().unwrap().unwrap();
    }
}
