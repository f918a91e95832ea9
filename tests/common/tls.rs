//! A TLS front for the end-to-end tests: it terminates TLS (native-tls's `TlsAcceptor`, with a
//! certificate from `tests/data/tls/`) on 127.0.0.1 and relays the plaintext bytes, both ways, to
//! a plain `sprites-local`. The client under test speaks real HTTPS and WSS to it; the server
//! behind it is the real one, so nothing of the protocol is imitated here.
//!
//! Every connection is one thread: a blocking handshake bounded by socket timeouts, then a relay
//! over non-blocking sockets driven by `poll(2)` (a TLS stream cannot be cloned into a reader
//! and a writer thread). A relay ends when either side closes, when the front is dropped or
//! [`cut`](TlsFront::cut), or after [`IDLE_LIMIT`] with nothing to move.

use native_tls::{Identity, TlsAcceptor, TlsStream};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bound on a TLS handshake and on connecting to the backend.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// A relay with nothing to move either way for this long closes (a safety net: the tests'
/// connections are busy or closed long before).
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Bytes buffered per direction before the relay stops reading that side.
const BUFFER: usize = 256 << 10;

/// A file of `tests/data/tls/` (see `make.sh` there).
pub fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The test CA, which signed [`Cert::Server`] and [`Cert::Other`].
pub fn ca_pem() -> Vec<u8> {
    data("ca.pem")
}

/// The certificate a [`TlsFront`] presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cert {
    /// `localhost` and `127.0.0.1`, signed by the test CA.
    Server,
    /// `other.example` only, signed by the test CA: any URL of the front is a name mismatch.
    Other,
    /// `localhost` and `127.0.0.1`, self-signed: no root store trusts it.
    Untrusted,
}

impl Cert {
    fn identity(self) -> Identity {
        let stem = match self {
            Cert::Server => "server",
            Cert::Other => "other",
            Cert::Untrusted => "untrusted",
        };
        Identity::from_pkcs8(&data(&format!("{stem}.pem")), &data(&format!("{stem}.key")))
            .expect("test identity")
    }
}

/// A TLS-terminating relay in front of a plain server; stops (and joins its threads) on drop.
pub struct TlsFront {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    /// The client side of each connection still open, by number: what `cut` shuts down.
    open: Mutex<HashMap<usize, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    handshakes: AtomicUsize,
    /// Why each failed handshake failed, as the server saw it.
    refused: Mutex<Vec<String>>,
}

impl TlsFront {
    /// Listens on 127.0.0.1 (a free port), presenting `cert`, relaying to `backend`.
    pub fn start(cert: Cert, backend: SocketAddr) -> TlsFront {
        let acceptor = Arc::new(TlsAcceptor::new(cert.identity()).expect("TLS acceptor"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS front");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let thread = std::thread::spawn(move || {
            for (id, incoming) in listener.incoming().enumerate() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                // A failed accept (the peer gave up already) ends nothing but itself.
                let Ok(tcp) = incoming else { continue };
                let Ok(handle) = tcp.try_clone() else {
                    continue;
                };
                lock(&accepting.open).insert(id, handle);
                let (acceptor, shared) = (acceptor.clone(), accepting.clone());
                let serving =
                    std::thread::spawn(move || serve(&acceptor, tcp, backend, &shared, id));
                lock(&accepting.threads).push(serving);
            }
        });
        TlsFront {
            addr,
            shared,
            acceptor: Some(thread),
        }
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `https://127.0.0.1:PORT`: the server certificate's IP address entry.
    pub fn ip_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Why the handshakes that failed failed (OpenSSL's words), in order.
    pub fn refused(&self) -> Vec<String> {
        lock(&self.shared.refused).clone()
    }

    /// Stops the front (joining its threads) and returns [`refused`](Self::refused), complete
    /// now that no handshake is still under way.
    pub fn stop(self) -> Vec<String> {
        let shared = self.shared.clone();
        drop(self);
        lock(&shared.refused).clone()
    }

    /// Cuts every open connection now, without a TLS close_notify or a WebSocket close: the
    /// client sees its TCP connection end mid-stream. Later connections are served as usual.
    pub fn cut(&self) -> usize {
        let open = lock(&self.shared.open);
        for tcp in open.values() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        open.len()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, HANDSHAKE_LIMIT);
        if let Some(thread) = self.acceptor.take() {
            let _ = thread.join();
        }
        self.cut();
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn serve(acceptor: &TlsAcceptor, tcp: TcpStream, backend: SocketAddr, shared: &Shared, id: usize) {
    let bounded = tcp
        .set_read_timeout(Some(HANDSHAKE_LIMIT))
        .and_then(|()| tcp.set_write_timeout(Some(HANDSHAKE_LIMIT)));
    if bounded.is_ok() && !shared.stopping.load(Ordering::SeqCst) {
        match acceptor.accept(tcp) {
            Ok(tls) => {
                shared.handshakes.fetch_add(1, Ordering::SeqCst);
                // Its end is the end of the connection, for whatever reason.
                let _ = relay(tls, backend);
            }
            Err(err) => lock(&shared.refused).push(err.to_string()),
        }
    }
    // The handle in `open` keeps the socket alive: shut it down so the client sees the end.
    if let Some(tcp) = lock(&shared.open).remove(&id) {
        let _ = tcp.shutdown(Shutdown::Both);
    }
}

fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Relays until one side has closed and what it sent has been delivered, or a side fails.
fn relay(mut tls: TlsStream<TcpStream>, backend: SocketAddr) -> io::Result<()> {
    let mut plain = TcpStream::connect_timeout(&backend, HANDSHAKE_LIMIT)?;
    plain.set_nodelay(true)?;
    tls.get_ref().set_nodelay(true)?;
    tls.get_ref().set_read_timeout(None)?;
    tls.get_ref().set_write_timeout(None)?;
    tls.get_ref().set_nonblocking(true)?;
    plain.set_nonblocking(true)?;

    // up: client → backend; down: backend → client.
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut client_done, mut backend_done) = (false, false);
    let mut buf = vec![0; 64 << 10];
    loop {
        // Move bytes until nothing moves: this also drains what OpenSSL holds decrypted, which
        // poll(2) cannot see.
        loop {
            let mut moved = false;
            if !client_done && up.len() < BUFFER {
                match tls.read(&mut buf) {
                    Ok(0) => client_done = true,
                    Ok(n) => {
                        up.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    Err(e) if would_block(&e) => {}
                    // A reset or a TLS failure: the client is gone.
                    Err(_) => client_done = true,
                }
            }
            if !up.is_empty() {
                match plain.write(&up) {
                    Ok(n) => {
                        up.drain(..n);
                        moved |= n > 0;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if !backend_done && down.len() < BUFFER {
                match plain.read(&mut buf) {
                    Ok(0) => backend_done = true,
                    Ok(n) => {
                        down.extend_from_slice(&buf[..n]);
                        moved = true;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(_) => backend_done = true,
                }
            }
            if !down.is_empty() && !client_done {
                match tls.write(&down) {
                    Ok(n) => {
                        down.drain(..n);
                        moved |= n > 0;
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if !moved {
                break;
            }
        }
        if (client_done && up.is_empty()) || (backend_done && down.is_empty()) {
            return Ok(());
        }
        let client_events = if !client_done && up.len() < BUFFER {
            libc::POLLIN
        } else {
            0
        } | if !down.is_empty() && !client_done {
            libc::POLLOUT
        } else {
            0
        };
        let backend_events = if !backend_done && down.len() < BUFFER {
            libc::POLLIN
        } else {
            0
        } | if !up.is_empty() { libc::POLLOUT } else { 0 };
        // A descriptor with nothing to wait for is left out (-1), so a hang-up on it cannot
        // wake the loop again and again.
        let entry = |fd: i32, events: libc::c_short| libc::pollfd {
            fd: if events == 0 { -1 } else { fd },
            events,
            revents: 0,
        };
        let mut fds = [
            entry(tls.get_ref().as_raw_fd(), client_events),
            entry(plain.as_raw_fd(), backend_events),
        ];
        let millis = IDLE_LIMIT.as_millis() as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        match ready {
            0 => return Err(io::ErrorKind::TimedOut.into()),
            n if n < 0 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            _ => {}
        }
    }
}
