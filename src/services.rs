//! Services ([PROTOCOL.md §11](crate::protocol#11-services)): long-running processes the
//! sprite's runtime starts (in `needs` order), restarts after a crash and brings back after
//! the sprite wakes. Definitions are created with a [`ServiceSpec`]; start, stop, restart,
//! create and logs stream [`ServiceEvent`]s through a [`ServiceEvents`] iterator.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::client::Client;
use crate::error::{ApiError, Error, Result, TransportError};
use crate::sprite::Sprite;
use crate::url::{Query, encode};

/// Longest event line accepted; a longer one is [`Error::ResponseTooLarge`].
const MAX_EVENT_LINE: u64 = 4 << 20;
/// How long a server follows output when no duration is given (PROTOCOL.md §11).
const SERVER_DEFAULT_FOLLOW: Duration = Duration::from_secs(5);
/// How long a server waits between TERM and KILL when no grace is given.
const SERVER_DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// A service: its definition and, when the server reports it, its [`ServiceState`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// The executable.
    #[serde(default, deserialize_with = "null_default")]
    pub cmd: String,
    /// Its arguments.
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    /// Services started before this one.
    #[serde(default, deserialize_with = "null_default")]
    pub needs: Vec<String>,
    /// The port its HTTP server listens on (the sprite's URL routes there).
    #[serde(default)]
    pub http_port: Option<u16>,
    /// Environment additions.
    #[serde(default, deserialize_with = "null_default")]
    pub env: BTreeMap<String, String>,
    /// Working directory (the server's default, the home directory, when `None`).
    #[serde(default)]
    pub dir: Option<String>,
    /// What it is doing now.
    #[serde(default)]
    pub state: Option<ServiceState>,
}

/// What a service is doing ([`Service::state`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ServiceState {
    /// The service's name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Running, stopped, failed, ...
    pub status: ServiceStatus,
    /// Its process id, while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// When its current process started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Why it failed (empty when it did not).
    #[serde(default, deserialize_with = "null_default")]
    pub error: String,
    /// How often it was restarted after a crash.
    #[serde(default, deserialize_with = "null_default")]
    pub restart_count: u32,
    /// When it is tried again after a crash (RFC 3339).
    #[serde(default)]
    pub next_restart_at: Option<String>,
}

/// [`ServiceState::status`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceStatus {
    /// Not running and not going to be restarted (a stop is sticky).
    Stopped,
    /// Being started.
    Starting,
    /// Its process runs.
    Running,
    /// Being stopped.
    Stopping,
    /// It crashed or could not start; see [`ServiceState::next_restart_at`].
    Failed,
    /// A status this client does not know, as sent.
    Other(String),
}

impl ServiceStatus {
    /// The wire name (`running`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            ServiceStatus::Stopped => "stopped",
            ServiceStatus::Starting => "starting",
            ServiceStatus::Running => "running",
            ServiceStatus::Stopping => "stopping",
            ServiceStatus::Failed => "failed",
            ServiceStatus::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for ServiceStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "stopped" => ServiceStatus::Stopped,
            "starting" => ServiceStatus::Starting,
            "running" => ServiceStatus::Running,
            "stopping" => ServiceStatus::Stopping,
            "failed" => ServiceStatus::Failed,
            _ => ServiceStatus::Other(s),
        })
    }
}

impl std::fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service definition for [`Sprite::create_service`], built like a `Command`.
///
/// ```
/// let web = sprites::ServiceSpec::new("python3")
///     .args(["-m", "http.server", "8080"])
///     .needs(["db"])
///     .http_port(8080)
///     .env("PYTHONUNBUFFERED", "1")
///     .dir("/home/sprite/site");
/// # let _ = web;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    cmd: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    needs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_port: Option<u16>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
}

impl ServiceSpec {
    /// A service that runs `cmd` (the executable only; arguments go in [`args`](Self::args)).
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("sleep").arg("infinity");
    /// # let _ = spec;
    /// ```
    pub fn new(cmd: impl Into<String>) -> ServiceSpec {
        ServiceSpec {
            cmd: cmd.into(),
            ..ServiceSpec::default()
        }
    }

    /// Adds one argument.
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("redis-server").arg("--port").arg("6379");
    /// # let _ = spec;
    /// ```
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("sh").args(["-c", "exec sleep 60"]);
    /// # let _ = spec;
    /// ```
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds services that must be started before this one (they must exist).
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("./web").needs(["db", "cache"]);
    /// # let _ = spec;
    /// ```
    pub fn needs<I, S>(mut self, needs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.needs.extend(needs.into_iter().map(Into::into));
        self
    }

    /// The port the service's HTTP server listens on; at most one service of a sprite may
    /// have one (the server answers 409 otherwise).
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("./web").http_port(8080);
    /// # let _ = spec;
    /// ```
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// Sets one environment variable for the service.
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("./web").env("PORT", "8080");
    /// # let _ = spec;
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The working directory (default: the home directory).
    ///
    /// ```
    /// let spec = sprites::ServiceSpec::new("./web").dir("/home/sprite/app");
    /// # let _ = spec;
    /// ```
    pub fn dir(mut self, dir: impl Into<String>) -> Self {
        self.dir = Some(dir.into());
        self
    }
}

/// What a [`ServiceEvent`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceEventKind {
    /// The service's process started.
    Started,
    /// Output on stdout ([`ServiceEvent::data`]).
    Stdout,
    /// Output on stderr ([`ServiceEvent::data`]).
    Stderr,
    /// The process exited ([`ServiceEvent::exit_code`]).
    Exit,
    /// Something failed ([`ServiceEvent::data`] says what).
    Error,
    /// A stop began.
    Stopping,
    /// The service is stopped.
    Stopped,
    /// The end of the stream ([`ServiceEvent::log_files`]).
    Complete,
    /// A type this client does not know, as sent.
    Other(String),
}

impl ServiceEventKind {
    fn parse(s: &str) -> ServiceEventKind {
        match s {
            "started" => ServiceEventKind::Started,
            "stdout" => ServiceEventKind::Stdout,
            "stderr" => ServiceEventKind::Stderr,
            "exit" => ServiceEventKind::Exit,
            "error" => ServiceEventKind::Error,
            "stopping" => ServiceEventKind::Stopping,
            "stopped" => ServiceEventKind::Stopped,
            "complete" => ServiceEventKind::Complete,
            other => ServiceEventKind::Other(other.to_owned()),
        }
    }
}

/// Where a service's logs are inside the sprite ([`ServiceEvent::log_files`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[non_exhaustive]
pub struct LogFiles {
    /// stdout and stderr together.
    #[serde(default)]
    pub combined: Option<String>,
    /// stdout.
    #[serde(default)]
    pub stdout: Option<String>,
    /// stderr.
    #[serde(default)]
    pub stderr: Option<String>,
}

/// One event of a service stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceEvent {
    /// What happened.
    pub kind: ServiceEventKind,
    /// Output (stdout/stderr) or a message (error).
    pub data: Option<String>,
    /// For [`ServiceEventKind::Exit`]: the exit code (128 + N after signal N).
    pub exit_code: Option<i32>,
    /// When, in milliseconds since the Unix epoch (0 when the server sent none).
    pub timestamp_ms: u64,
    /// For [`ServiceEventKind::Complete`]: the log files.
    pub log_files: Option<LogFiles>,
}

impl ServiceEvent {
    /// Parses one NDJSON line; `None` for a blank or unparsable one (skipped, as the
    /// official SDKs do).
    fn parse(line: &str) -> Option<ServiceEvent> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let v: Value = serde_json::from_str(line).ok()?;
        let kind = ServiceEventKind::parse(v.get("type")?.as_str()?);
        Some(ServiceEvent {
            kind,
            data: v.get("data").and_then(Value::as_str).map(str::to_owned),
            exit_code: v
                .get("exit_code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok()),
            timestamp_ms: v.get("timestamp").and_then(Value::as_u64).unwrap_or(0),
            log_files: v
                .get("log_files")
                .and_then(|l| serde_json::from_value(l.clone()).ok()),
        })
    }
}

/// The events of a service operation, as the server streams them: an iterator of
/// `Result<ServiceEvent>`. [`wait`](Self::wait) drains it and turns an error event into `Err`.
/// Dropping it closes the stream (the operation itself has already been started).
pub struct ServiceEvents {
    status: u16,
    reader: BufReader<Box<dyn Read + Send + Sync + 'static>>,
    done: bool,
}

impl std::fmt::Debug for ServiceEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEvents")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ServiceEvents {
    fn new(response: ureq::Response) -> ServiceEvents {
        ServiceEvents {
            status: response.status(),
            reader: BufReader::new(response.into_reader()),
            done: false,
        }
    }

    /// Reads every remaining event; `Err` for the first error event (the server saying the
    /// operation failed, as [`Error::Api`] with code `service_error`) or a broken stream.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-wait", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// let spec = sprites::ServiceSpec::new("/no/such/program");
    /// let err = sprite.create_service("broken", &spec, Some(Duration::ZERO))?.wait().unwrap_err();
    /// assert!(err.to_string().contains("/no/such/program"));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn wait(self) -> Result<()> {
        for event in self {
            event?;
        }
        Ok(())
    }

    fn read_event(&mut self) -> Result<Option<ServiceEvent>> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_EVENT_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| TransportError::io("reading a service's events", e))?;
            if n == 0 {
                return Ok(None);
            }
            if n as u64 > MAX_EVENT_LINE {
                return Err(Error::ResponseTooLarge {
                    what: "a service event".into(),
                    limit: MAX_EVENT_LINE,
                });
            }
            if let Some(ev) = ServiceEvent::parse(&String::from_utf8_lossy(&line)) {
                return Ok(Some(ev));
            }
        }
    }
}

impl Iterator for ServiceEvents {
    type Item = Result<ServiceEvent>;

    /// The next event; an error event is returned as `Err` (and ends the iteration).
    fn next(&mut self) -> Option<Result<ServiceEvent>> {
        if self.done {
            return None;
        }
        match self.read_event() {
            Ok(Some(ev)) if ev.kind == ServiceEventKind::Error => {
                self.done = true;
                let message = ev.data.unwrap_or_else(|| "service operation failed".into());
                Some(Err(ApiError::new(
                    self.status,
                    Some("service_error"),
                    message,
                )
                .into()))
            }
            Ok(Some(ev)) => Some(Ok(ev)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A duration as Go writes one: `10s`, `1500ms`, `0s`.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros().max(1))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidInput(
            "a service name must not be empty".into(),
        ));
    }
    Ok(())
}

impl Sprite {
    fn services_path(&self, rest: &str) -> String {
        self.path(&format!("/services{rest}"))
    }

    /// A streamed service request, bounded by `window` (what the server streams for) plus
    /// the client's usual bound for an answer.
    fn service_stream(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        window: Duration,
    ) -> Result<ServiceEvents> {
        let client = self.client();
        let request = client
            .streaming_request(method, path)
            .timeout(window.saturating_add(client.inner.http_timeout));
        Ok(ServiceEvents::new(client.send(request, body)?))
    }

    /// Every service of this sprite, with its state (`GET /services`).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-list", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// for service in sprite.list_services()? {
    ///     let status = service.state.map(|s| s.status.to_string());
    ///     println!("{}: {status:?}", service.name);
    /// }
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn list_services(&self) -> Result<Vec<Service>> {
        let client = self.client();
        let response = client.send(client.request("GET", &self.services_path("")), None)?;
        // An array, or (some servers) {"services": [...]}.
        let v: Value = Client::decode(response)?;
        let list = match v {
            Value::Object(mut o) => o.remove("services").unwrap_or(Value::Null),
            other => other,
        };
        if list.is_null() {
            return Ok(Vec::new());
        }
        serde_json::from_value(list).map_err(Error::Decode)
    }

    /// One service and its state (`GET /services/{name}`); [`Error::Api`] with status 404
    /// when there is none.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-get", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// match sprite.get_service("web") {
    ///     Ok(web) => println!("{:?}", web.state),
    ///     Err(sprites::Error::Api(e)) if e.status == 404 => println!("no such service"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn get_service(&self, name: &str) -> Result<Service> {
        check_name(name)?;
        let client = self.client();
        let path = self.services_path(&format!("/{}", encode(name)));
        Client::decode(client.send(client.request("GET", &path), None)?)
    }

    /// Creates service `name` (or replaces its definition, restarting it), and starts it
    /// (`PUT /services/{name}`). The events cover the start and then its output for `follow`
    /// (`None`: the server's default, 5 s).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] 409 when another service already has an `http_port`, 400 for a bad
    /// definition (e.g. a need that does not exist); a failed start is an error event.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-create", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// use sprites::{ServiceEventKind, ServiceSpec};
    /// let spec = ServiceSpec::new("sh").args(["-c", "echo ready; exec sleep 60"]);
    /// for event in sprite.create_service("app", &spec, Some(Duration::from_millis(500)))? {
    ///     let event = event?;
    ///     if event.kind == ServiceEventKind::Stdout {
    ///         print!("{}", event.data.unwrap_or_default());
    ///     }
    /// }
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_service(
        &self,
        name: &str,
        spec: &ServiceSpec,
        follow: Option<Duration>,
    ) -> Result<ServiceEvents> {
        check_name(name)?;
        let mut q = Query::new();
        q.push_opt("duration", follow.map(go_duration).as_deref());
        let path = self.services_path(&format!("/{}{}", encode(name), q.as_str()));
        let body = serde_json::to_value(spec).map_err(Error::Decode)?;
        let window = follow.unwrap_or(SERVER_DEFAULT_FOLLOW) + SERVER_DEFAULT_GRACE;
        self.service_stream("PUT", &path, Some(&body), window)
    }

    /// Deletes service `name` (`DELETE /services/{name}`), stopping it first; its log file
    /// stays. [`Error::Api`] 404 for none, 409 when another service needs it.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-delete", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # sprite.create_service("app", &sprites::ServiceSpec::new("true"), Some(std::time::Duration::ZERO))?.wait()?;
    /// sprite.delete_service("app")?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn delete_service(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let client = self.client();
        let path = self.services_path(&format!("/{}", encode(name)));
        let request = client
            .request("DELETE", &path)
            .timeout(SERVER_DEFAULT_GRACE.saturating_add(client.inner.http_timeout));
        client.send(request, None).map(drop)
    }

    /// Starts service `name` (`POST /services/{name}/start`) and follows its output for
    /// `follow` (`None`: the server's default, 5 s). [`Error::Api`] 404 for none.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-start", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// # let spec = sprites::ServiceSpec::new("sleep").arg("60");
    /// # sprite.create_service("app", &spec, Some(Duration::ZERO))?.wait()?;
    /// # sprite.stop_service("app", None)?.wait()?;
    /// sprite.start_service("app", Some(Duration::ZERO))?.wait()?;
    /// let state = sprite.get_service("app")?.state.expect("state");
    /// assert_eq!(state.status, sprites::ServiceStatus::Running);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn start_service(&self, name: &str, follow: Option<Duration>) -> Result<ServiceEvents> {
        self.start_or_restart(name, "start", follow)
    }

    /// Stops (if it runs) and starts service `name` (`POST /services/{name}/restart`),
    /// following its output for `follow` (`None`: the server's default).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-restart", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// # sprite.create_service("app", &sprites::ServiceSpec::new("sleep").arg("60"), Some(Duration::ZERO))?.wait()?;
    /// let kinds: Vec<_> = sprite
    ///     .restart_service("app", Some(Duration::ZERO))?
    ///     .map(|e| e.map(|e| e.kind))
    ///     .collect::<Result<_, _>>()?;
    /// assert!(kinds.contains(&sprites::ServiceEventKind::Started));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn restart_service(&self, name: &str, follow: Option<Duration>) -> Result<ServiceEvents> {
        self.start_or_restart(name, "restart", follow)
    }

    fn start_or_restart(
        &self,
        name: &str,
        op: &str,
        follow: Option<Duration>,
    ) -> Result<ServiceEvents> {
        check_name(name)?;
        let mut q = Query::new();
        q.push_opt("duration", follow.map(go_duration).as_deref());
        let path = self.services_path(&format!("/{}/{op}{}", encode(name), q.as_str()));
        let window = follow.unwrap_or(SERVER_DEFAULT_FOLLOW) + SERVER_DEFAULT_GRACE;
        self.service_stream("POST", &path, None, window)
    }

    /// Stops service `name` (`POST /services/{name}/stop`): TERM, then KILL after `grace`
    /// (`None`: the server's default, 10 s). The stop is sticky: the service stays stopped
    /// until started again. [`Error::Api`] 404 for none, 409 when it is not running.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-stop", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// # sprite.create_service("app", &sprites::ServiceSpec::new("sleep").arg("60"), Some(Duration::ZERO))?.wait()?;
    /// sprite.stop_service("app", Some(Duration::from_secs(2)))?.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn stop_service(&self, name: &str, grace: Option<Duration>) -> Result<ServiceEvents> {
        check_name(name)?;
        let mut q = Query::new();
        q.push_opt("timeout", grace.map(go_duration).as_deref());
        let path = self.services_path(&format!("/{}/stop{}", encode(name), q.as_str()));
        // TERM, the grace, then KILL and a bounded wait for the exit.
        let window = grace.unwrap_or(SERVER_DEFAULT_GRACE) + SERVER_DEFAULT_GRACE;
        self.service_stream("POST", &path, None, window)
    }

    /// Sends `signal` (`TERM`, `SIGHUP`, ...) to service `name`'s process
    /// (`POST /services/signal`). TERM or KILL end it, which counts as a crash: it is
    /// restarted. [`Error::Api`] 404 for none, 409 when it is not running, 400 for an
    /// unknown signal.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-signal", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # sprite.create_service("app", &sprites::ServiceSpec::new("sleep").arg("60"), Some(std::time::Duration::ZERO))?.wait()?;
    /// sprite.signal_service("app", "HUP")?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn signal_service(&self, name: &str, signal: &str) -> Result<()> {
        check_name(name)?;
        let signal = crate::exec::normalize_signal(signal)?;
        let client = self.client();
        let body = serde_json::json!({ "name": name, "signal": signal });
        let request = client.request("POST", &self.services_path("/signal"));
        client.send(request, Some(&body)).map(drop)
    }

    /// Service `name`'s output (`GET /services/{name}/logs`): its last `lines` lines
    /// (`None`: the server's default, 100) as [`ServiceEventKind::Stdout`] /
    /// [`ServiceEventKind::Stderr`] events, then what it writes during `follow` (`None`:
    /// nothing more).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-svc-logs", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # sprite.create_service("app", &sprites::ServiceSpec::new("sleep").arg("60"), Some(std::time::Duration::ZERO))?.wait()?;
    /// for event in sprite.service_logs("app", Some(20), None)? {
    ///     let event = event?;
    ///     if let Some(text) = event.data {
    ///         print!("{text}");
    ///     }
    /// }
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn service_logs(
        &self,
        name: &str,
        lines: Option<usize>,
        follow: Option<Duration>,
    ) -> Result<ServiceEvents> {
        check_name(name)?;
        let mut q = Query::new();
        q.push_opt("lines", lines.map(|n| n.to_string()).as_deref())
            .push_opt("duration", follow.map(go_duration).as_deref());
        let path = self.services_path(&format!("/{}/logs{}", encode(name), q.as_str()));
        self.service_stream("GET", &path, None, follow.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_tolerate_what_servers_send() {
        let s: Service = serde_json::from_str(
            r#"{"name":"web","cmd":"python3","args":["-m","http.server","3000"],"needs":null,
                "http_port":3000,"env":{"PORT":"3000"},"dir":"/home/sprite/app",
                "state":{"name":"web","status":"running","pid":7353,
                         "started_at":"2026-06-02T17:11:14.555839485Z","error":"",
                         "restart_count":2,"next_restart_at":null,"new_field":1}}"#,
        )
        .unwrap();
        assert_eq!(s.http_port, Some(3000));
        assert!(s.needs.is_empty());
        let st = s.state.unwrap();
        assert_eq!(st.status, ServiceStatus::Running);
        assert_eq!(st.pid, Some(7353));
        assert_eq!(st.restart_count, 2);
        let bare: Service =
            serde_json::from_str(r#"{"name":"x","state":{"status":"paused"}}"#).unwrap();
        assert_eq!(
            bare.state.unwrap().status,
            ServiceStatus::Other("paused".into())
        );
    }

    #[test]
    fn events_parse_and_errors_end_the_stream() {
        let body = concat!(
            "{\"type\":\"started\",\"timestamp\":1780420274555}\n",
            "\n",
            "garbage\n",
            "{\"type\":\"stdout\",\"data\":\"hi\\n\",\"timestamp\":1}\n",
            "{\"type\":\"exit\",\"exit_code\":1,\"timestamp\":1780420025035}\n",
            "{\"type\":\"error\",\"data\":\"boom\",\"timestamp\":2}\n",
            "{\"type\":\"complete\"}"
        );
        let events = ServiceEvents {
            status: 200,
            reader: BufReader::new(Box::new(std::io::Cursor::new(body.as_bytes().to_vec()))),
            done: false,
        };
        let got: Vec<_> = events.collect();
        assert_eq!(got.len(), 4);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.kind, ServiceEventKind::Started);
        assert_eq!(first.timestamp_ms, 1780420274555);
        assert_eq!(got[1].as_ref().unwrap().data.as_deref(), Some("hi\n"));
        assert_eq!(got[2].as_ref().unwrap().exit_code, Some(1));
        assert!(got[3].as_ref().unwrap_err().to_string().contains("boom"));
        let complete = ServiceEvent::parse(
            r#"{"type":"complete","log_files":{"combined":"/l"},"timestamp":3}"#,
        )
        .unwrap();
        assert_eq!(complete.log_files.unwrap().combined.as_deref(), Some("/l"));
        // A last line without its newline still counts.
        let tail = ServiceEvents {
            status: 200,
            reader: BufReader::new(Box::new(std::io::Cursor::new(
                b"{\"type\":\"complete\"}".to_vec(),
            ))),
            done: false,
        };
        assert!(tail.wait().is_ok());
    }

    #[test]
    fn specs_serialise_to_the_wire_names() {
        let spec = ServiceSpec::new("python3")
            .arg("-m")
            .needs(["db"])
            .http_port(8080)
            .env("A", "1")
            .dir("/app");
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"cmd":"python3","args":["-m"],"needs":["db"],"http_port":8080,
                               "env":{"A":"1"},"dir":"/app"})
        );
        assert_eq!(
            serde_json::to_value(ServiceSpec::new("true")).unwrap(),
            serde_json::json!({"cmd":"true"})
        );
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
