//! [`Client`]: the token, the base URL and one shared HTTP agent; [`ClientBuilder`] to configure it.

use crate::error::{Error, Result, TransportError};
use crate::proxy::Proxy;
use crate::sprite::Sprite;
use crate::tls::Tls;
use crate::url::BaseUrl;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The API's public base URL, used when none is given.
pub const DEFAULT_BASE_URL: &str = "https://api.sprites.dev";

const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JSON body the client reads: far above any listing the API sends, far below what
/// would hurt a process.
const MAX_JSON_BODY: u64 = 64 << 20;

fn strip_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

/// A handle to the Sprites API: cheap to clone, safe to share between threads.
///
/// All clones share one HTTP agent (and so one connection pool) and one TLS configuration.
///
/// ```no_run
/// # fn main() -> sprites::Result<()> {
/// let client = sprites::Client::new("spr_...")?;
/// for info in client.sprites() {
///     println!("{}", info?.name);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) base: BaseUrl,
    pub(crate) token: String,
    pub(crate) agent: ureq::Agent,
    pub(crate) tls: Tls,
    /// The proxy every connection goes through, if any.
    pub(crate) proxy: Option<Proxy>,
    /// `Proxy-Authorization` for plain-HTTP requests sent to the proxy, which ureq only adds
    /// to its `CONNECT`s (for `https`). Never set for `https`: it would reach the server.
    proxy_authorization: Option<String>,
    pub(crate) user_agent: String,
    pub(crate) http_timeout: Duration,
    pub(crate) create_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) keepalive: crate::exec::Keepalive,
    /// Each sprite's runtime version and attach route, as far as responses told.
    pub(crate) runtimes: crate::exec::Runtimes,
    /// Whether commands may run over pooled control connections.
    pub(crate) control: bool,
    /// Each sprite's control connections.
    pub(crate) pools: crate::control::Pools,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the public API with this token.
    ///
    /// Fails only if the system TLS library cannot be initialised.
    ///
    /// ```
    /// let client = sprites::Client::new("spr_example")?;
    /// assert_eq!(client.base_url(), "https://api.sprites.dev");
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn new(token: impl Into<String>) -> Result<Client> {
        Client::builder().token(token).build()
    }

    /// A builder for a client with a custom base URL, timeouts or user agent.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = sprites::Client::builder()
    ///     .base_url("http://127.0.0.1:7780/")
    ///     .token("local-token")
    ///     .http_timeout(Duration::from_secs(5))
    ///     .build()?;
    /// assert_eq!(client.base_url(), "http://127.0.0.1:7780");
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from the environment: the token from `SPRITES_TOKEN` (or
    /// `SPRITE_TOKEN`), the base URL from `SPRITES_API_URL` (default [`DEFAULT_BASE_URL`]).
    ///
    /// ```no_run
    /// let client = sprites::Client::from_env()?;
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn from_env() -> Result<Client> {
        let token = ["SPRITES_TOKEN", "SPRITE_TOKEN"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
            .ok_or_else(|| {
                Error::Config("set SPRITES_TOKEN (or SPRITE_TOKEN) to an API token".into())
            })?;
        let mut builder = Client::builder().token(token.trim());
        if let Ok(url) = std::env::var("SPRITES_API_URL")
            && !url.trim().is_empty()
        {
            builder = builder.base_url(url.trim());
        }
        builder.build()
    }

    /// The base URL requests go to, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// A handle to the sprite with this name. Does no I/O: the sprite need not exist yet.
    ///
    /// ```
    /// let client = sprites::Client::new("spr_example")?;
    /// let sprite = client.sprite("my-sprite");
    /// assert_eq!(sprite.name(), "my-sprite");
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn sprite(&self, name: impl Into<String>) -> Sprite {
        Sprite::new(self.clone(), name.into())
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.inner.base.as_str(), path_and_query)
    }

    /// A request with auth and user agent set, and the default JSON timeout.
    pub(crate) fn request(&self, method: &str, path_and_query: &str) -> ureq::Request {
        self.streaming_request(method, path_and_query)
            .timeout(self.inner.http_timeout)
    }

    /// A request with auth set and no overall deadline: streamed bodies of any size are bounded
    /// per read and write (the agent's timeouts), not in total.
    pub(crate) fn streaming_request(&self, method: &str, path_and_query: &str) -> ureq::Request {
        let request = self
            .inner
            .agent
            .request(method, &self.url(path_and_query))
            .set("Authorization", &format!("Bearer {}", self.inner.token));
        match &self.inner.proxy_authorization {
            Some(value) => request.set("Proxy-Authorization", value),
            None => request,
        }
    }

    pub(crate) fn create_timeout(&self) -> Duration {
        self.inner.create_timeout
    }

    /// Reads a JSON response body, bounded, and decodes it.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(response: ureq::Response) -> Result<T> {
        let url = response.get_url().to_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), MAX_JSON_BODY + 1),
            &mut body,
        )
        .map_err(|e| {
            TransportError::io(format!("reading the response of {}", strip_query(&url)), e)
        })?;
        if body.len() as u64 > MAX_JSON_BODY {
            return Err(Error::ResponseTooLarge {
                what: "a JSON response".into(),
                limit: MAX_JSON_BODY,
            });
        }
        serde_json::from_slice(&body).map_err(Error::Decode)
    }

    /// Reads what is left of a response's body (bounded) and drops it, so the agent can
    /// reuse the connection: ureq pools a connection only once its response was read to the
    /// end, and a dropped unread response costs the next request a new connection.
    pub(crate) fn drain(&self, response: ureq::Response) -> Result<()> {
        let url = response.get_url().to_owned();
        std::io::copy(
            &mut std::io::Read::take(response.into_reader(), MAX_JSON_BODY),
            &mut std::io::sink(),
        )
        .map_err(|e| {
            TransportError::io(format!("reading the response of {}", strip_query(&url)), e)
        })?;
        Ok(())
    }

    /// Sends a request with an optional JSON body and returns the response; error statuses
    /// become [`Error::Api`].
    pub(crate) fn send(
        &self,
        request: ureq::Request,
        body: Option<&serde_json::Value>,
    ) -> Result<ureq::Response> {
        let result = match body {
            Some(json) => request
                .set("Content-Type", "application/json")
                .send_bytes(json.to_string().as_bytes()),
            None => request.call(),
        };
        result.map_err(Error::from)
    }
}

/// Configures a [`Client`].
///
/// ```
/// let client = sprites::Client::builder().token("t").user_agent("my-tool/1.0").build()?;
/// # Ok::<(), sprites::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    user_agent: String,
    http_timeout: Duration,
    create_timeout: Duration,
    connect_timeout: Duration,
    keepalive: crate::exec::Keepalive,
    proxy: ProxySetting,
    root_certificates: Vec<RootCertificate>,
    control: bool,
}

/// A PEM text given to [`ClientBuilder::add_root_certificate`], parsed by `build`.
#[derive(Clone)]
struct RootCertificate(Vec<u8>);

impl AsRef<[u8]> for RootCertificate {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for RootCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootCertificate({} bytes of PEM)", self.0.len())
    }
}

/// Where [`ClientBuilder`] takes its proxy from.
#[derive(Debug, Clone)]
enum ProxySetting {
    Env,
    Direct,
    Url(String),
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: DEFAULT_BASE_URL.into(),
            token: None,
            user_agent: format!("sprites-rust/{}", env!("CARGO_PKG_VERSION")),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: crate::exec::Keepalive::DEFAULT,
            proxy: ProxySetting::Env,
            root_certificates: Vec::new(),
            control: true,
        }
    }
}

impl ClientBuilder {
    /// The API base URL (`http`, `https`; a trailing `/` is dropped). Default [`DEFAULT_BASE_URL`].
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The bearer token. Required.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The `User-Agent` header. Default `sprites-rust/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Bound on each plain HTTP call (not on streams). Default 30 s.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Bound on sprite creation, which may wait for capacity. Default 120 s.
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// Bound on establishing a TCP (and TLS) connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Keepalive of command connections: ping every `interval`, and give up on a connection
    /// (with [`Error::KeepaliveTimeout`]) after `limit` without any message from the server.
    /// Default 15 s / 45 s, as the official SDKs. `limit` is raised to at least `interval`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = sprites::Client::builder()
    ///     .token("t")
    ///     .keepalive(Duration::from_secs(5), Duration::from_secs(15))
    ///     .build()?;
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn keepalive(mut self, interval: Duration, limit: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(10));
        self.keepalive = crate::exec::Keepalive {
            interval,
            limit: limit.max(interval),
        };
        self
    }

    /// Sends every request and command connection through this HTTP proxy
    /// (`http://[user:password@]host[:port]`), whatever the environment says. HTTP requests go
    /// to it as proxy requests (through a `CONNECT` tunnel for `https`), command connections
    /// through a `CONNECT` tunnel.
    ///
    /// Without this call the proxy comes from the environment as curl reads it:
    /// `https_proxy`/`HTTPS_PROXY` for an `https` base URL (`http_proxy`/`HTTP_PROXY` for
    /// `http`), else `all_proxy`/`ALL_PROXY`, unless `no_proxy`/`NO_PROXY` lists the host (`*`,
    /// names with their subdomains, IP addresses, CIDR ranges, each optionally `:port`).
    /// Loopback hosts never use a proxy from the environment.
    ///
    /// ```
    /// let client = sprites::Client::builder()
    ///     .token("t")
    ///     .proxy("http://proxy.internal:3128")
    ///     .build()?;
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxySetting::Url(url.into());
        self
    }

    /// Whether commands run over pooled control connections where the server offers them
    /// (default `true`; [PROTOCOL.md §8](crate::protocol#8-control-connections)).
    ///
    /// A control connection is a long-lived WebSocket per sprite that carries one command at
    /// a time, so that a command on a warm connection costs one network round trip: its
    /// request, the stdin written before the server answers and the end of that stdin go out
    /// together, and its output, exit status and the end of the operation come back together.
    /// The first command to a sprite runs on its own connection while a control connection is
    /// opened in the background for the next ones ([`Sprite::connect`](crate::Sprite::connect)
    /// opens one up front). A server without control connections (it answers 404) is
    /// remembered and every command uses its own connection, as with `false`.
    ///
    /// ```
    /// let client = sprites::Client::builder().token("t").control_connections(false).build()?;
    /// # Ok::<(), sprites::Error>(())
    /// ```
    pub fn control_connections(mut self, enabled: bool) -> Self {
        self.control = enabled;
        self
    }

    /// Connects directly, ignoring any proxy the environment names.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// Also trusts the certificate authorities in `pem` (one or more `-----BEGIN
    /// CERTIFICATE-----` blocks, as in a `.pem` or `.crt` file or a CA bundle), for HTTPS
    /// requests and command connections alike: a private or test deployment whose certificate
    /// no public CA signed. The default roots stay trusted (the platform's with the
    /// `native-tls` feature, Mozilla's with `rustls`); call it again for more.
    ///
    /// The text is parsed by [`build`](Self::build), which fails with [`Error::Config`] when it
    /// holds no certificate, a block that does not decode, or a block that is not a
    /// certificate (a private key, say).
    ///
    /// With the `native-tls` feature on Linux, OpenSSL also trusts the file and directory named
    /// by the `SSL_CERT_FILE` and `SSL_CERT_DIR` environment variables (set them before the
    /// process builds its first client), so a CA can be added without code; rustls ignores
    /// them. A server whose certificate no
    /// trusted root signed, or whose certificate is for another name, fails with
    /// [`Error::Transport`] of kind [`InvalidData`](std::io::ErrorKind::InvalidData), the TLS
    /// library's error as its source.
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/sprites/ca.pem")?;
    /// let client = sprites::Client::builder()
    ///     .base_url("https://sprites.internal:8443")
    ///     .token("t")
    ///     .add_root_certificate(&ca)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```
    /// let err = sprites::Client::builder()
    ///     .token("t")
    ///     .add_root_certificate("not a certificate")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, sprites::Error::Config(_)), "{err}");
    /// ```
    pub fn add_root_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates
            .push(RootCertificate(pem.as_ref().to_vec()));
        self
    }

    /// Builds the client.
    ///
    /// Errors with [`Error::Config`] when the token is missing or empty, the URL is not
    /// `http(s)://host[:port][/prefix]`, the proxy URL is not `http://host[:port]`, the URL is
    /// `https` and the crate was built without a TLS feature, a root certificate does not parse
    /// (or is given to a build without a TLS feature), or the TLS library cannot be
    /// initialised.
    pub fn build(self) -> Result<Client> {
        let token = self
            .token
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| Error::Config("a client needs a non-empty token".into()))?;
        if token.chars().any(|c| c.is_control()) {
            return Err(Error::Config(
                "the token contains control characters".into(),
            ));
        }
        let base = BaseUrl::parse(&self.base_url)?;
        let tls = Tls::new(&self.root_certificates)?;
        if base.tls && !tls.available() {
            return Err(Error::Config(
                "an https base URL needs the `native-tls` or `rustls` feature of sprites-blocking"
                    .into(),
            ));
        }
        let proxy = match &self.proxy {
            ProxySetting::Env => Proxy::from_env(&base, |name| std::env::var(name).ok())?,
            ProxySetting::Direct => None,
            ProxySetting::Url(url) => Some(Proxy::parse(url)?),
        };
        let mut agent = tls.configure(ureq::AgentBuilder::new());
        if let Some(proxy) = &proxy {
            agent = agent.proxy(
                ureq::Proxy::new(&proxy.url)
                    .map_err(|e| Error::Config(format!("invalid proxy URL: {e}")))?,
            );
        }
        let proxy_authorization = proxy
            .as_ref()
            .filter(|_| !base.tls)
            .and_then(Proxy::authorization);
        let agent = agent
            .user_agent(&self.user_agent)
            .timeout_connect(self.connect_timeout)
            // Reads and writes of streamed bodies are bounded per operation, not in total, so a
            // long download is never cut off while it makes progress.
            .timeout_read(self.http_timeout)
            .timeout_write(self.http_timeout)
            .build();
        Ok(Client {
            inner: Arc::new(ClientInner {
                base,
                token,
                agent,
                tls,
                proxy_authorization,
                proxy,
                user_agent: self.user_agent,
                http_timeout: self.http_timeout,
                create_timeout: self.create_timeout,
                connect_timeout: self.connect_timeout,
                keepalive: self.keepalive,
                runtimes: crate::exec::Runtimes::default(),
                control: self.control,
                pools: crate::control::Pools::default(),
            }),
        })
    }
}
