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
    pub(crate) fn new() -> Result<Tls> {
        #[cfg(feature = "rustls")]
        {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
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
            let connector = native_tls::TlsConnector::new()
                .map_err(|e| Error::Config(format!("TLS initialisation failed: {e}")))?;
            Ok(Tls::Native(Arc::new(connector)))
        }
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        Ok(Tls::Unavailable)
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
                Stream::Rustls(s) => s.write(buf),
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
            Stream::Rustls(s) => s.flush(),
            #[cfg(all(feature = "native-tls", not(feature = "rustls")))]
            Stream::Native(s) => s.flush(),
        }
    }
}
