//! The [`Sprite`] handle and sprite management ([PROTOCOL.md §5](crate::protocol#5-sprite-management)): create, get, list, update,
//! delete, upgrade.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::exec::Command;
use crate::types::{SpriteConfig, SpriteInfo, SpritePage, UrlSettings};
use crate::url::{Query, encode};
use serde_json::{Value, json};
use std::ffi::OsStr;

/// A handle to one sprite. Cheap to clone; holds no connection.
///
/// Get one from [`Client::sprite`] (no I/O) or [`Client::create_sprite`].
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-5", std::process::id()));
/// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
/// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
/// # client.create_sprite("my-sprite")?;
/// let sprite = client.sprite("my-sprite");
/// let output = sprite.command("uname").arg("-a").output()?;
/// println!("{}", String::from_utf8_lossy(&output.stdout));
/// # drop(server); let _ = std::fs::remove_dir_all(dir);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Sprite {
    client: Client,
    name: String,
}

impl Sprite {
    pub(crate) fn new(client: Client, name: String) -> Sprite {
        Sprite { client, name }
    }

    /// The sprite's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this handle uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `/v1/sprites/{name}` followed by `rest`.
    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/v1/sprites/{}{}", encode(&self.name), rest)
    }

    /// A [`Command`] that runs `program` on this sprite, built like `std::process::Command::new`.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-6", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("s")?;
    /// let status = sprite.command("ls").arg("-la").current_dir("/tmp").status()?;
    /// assert!(status.success());
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(self.clone(), program.as_ref())
    }

    /// The sprite's sessions: its running commands, detachable or not
    /// ([PROTOCOL.md §7.1](crate::protocol#71-list--get-v1spritesnameexec)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-sessions", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let mut sleeper = sprite.command("sleep").arg("60").stdin(sprites::Stdio::null()).spawn()?;
    /// let id = sleeper.session_id().expect("announced");
    /// let session = sprite.sessions()?.into_iter().find(|s| s.id == id).expect("listed");
    /// assert!(session.command.contains("sleep 60") && !session.tty);
    /// sleeper.kill()?;
    /// # sleeper.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn sessions(&self) -> Result<Vec<crate::Session>> {
        crate::exec::list_sessions(self)
    }

    /// Attaches to a running session, as a [`Child`](crate::Child) with all three pipes:
    /// what the session printed before (the server's scrollback) comes first on `stdout`, then
    /// what it prints live; what is written to `stdin` reaches it. Several clients may be
    /// attached to one session at once.
    ///
    /// Whether the session has a terminal comes from the server's `session_info`, which this
    /// waits for (at most 10 s, as the official SDKs) before returning, so that no output is
    /// read the wrong way: with a terminal, [`Child::is_tty`](crate::Child::is_tty) is true,
    /// output is raw and `stderr` is `None`.
    ///
    /// Dropping the `Child` (or [`Child::detach`](crate::Child::detach)) detaches and never
    /// stops the session; [`wait`](crate::Child::wait) waits for it to exit, and
    /// [`kill`](crate::Child::kill) stops it. Writing to stdin and then dropping it sends no
    /// end of input: other clients may still be typing.
    ///
    /// The URL follows the sprite's runtime version (`Sprite-Version`, fetched with
    /// `HEAD /exec` when no response has carried it yet): `/exec/{id}`, or `/exec?id={id}` for
    /// runtimes before 0.0.1-rc30, and the latter again when the former answers 404, as the Go
    /// SDK does ([PROTOCOL.md §7.2](crate::protocol#72-attach--websocket-v1spritesnameexecid-or-execidid)).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`](std::io::ErrorKind::NotFound) for an unknown session; what
    /// [`Command::spawn`] returns for an unreachable server; [`io::ErrorKind::InvalidData`](std::io::ErrorKind::InvalidData)
    /// ([`Error::Protocol`]) when the server sends no `session_info` within 10 s.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-attach", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::io::{BufRead, BufReader, Write};
    /// use sprites::Stdio;
    /// let shell = sprite.command("sh").tty(true).stdin(Stdio::null()).stdout(Stdio::null()).spawn()?;
    /// let id = shell.session_id().expect("announced");
    /// shell.detach(); // the shell keeps running
    ///
    /// let mut session = sprite.attach(&id)?;
    /// assert!(session.is_tty());
    /// session.stdin.as_mut().unwrap().write_all(b"echo hello $((6*7))\n")?;
    /// let mut screen = BufReader::new(session.stdout.take().unwrap());
    /// let mut line = String::new();
    /// while !line.contains("hello 42") {
    ///     line.clear();
    ///     screen.read_line(&mut line)?;
    /// }
    /// drop(session); // detached: the shell is still there
    /// sprite.kill_session(&id, "KILL", std::time::Duration::ZERO)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn attach(&self, id: &str) -> std::io::Result<crate::Child> {
        crate::Child::attach(self, id)
    }

    /// Sends `signal` (`"TERM"`, `"SIGINT"`, `"KILL"`, a number...) to session `id`, and after
    /// `grace` sends `KILL` if it still runs (`Duration::ZERO`: never)
    /// ([PROTOCOL.md §7.3](crate::protocol#73-kill--post-v1spritesnameexecidkill)). A session
    /// that had already exited is a success ([`KillReport::already_exited`](crate::KillReport::already_exited)):
    /// it is gone, which is what was asked. The server's progress lines, if it streams any,
    /// are read (at most 1 MiB, within `grace` plus the HTTP timeout) into the report.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a signal that is not a name or number; [`Error::Api`] with
    /// status 404 for an unknown session, or with code `kill_failed` when a progress line
    /// reports an error; transport errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-kill_session", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// let mut child = sprite.command("sleep").arg("60").stdin(sprites::Stdio::null()).spawn()?;
    /// let id = child.session_id().expect("announced");
    /// let report = sprite.kill_session(&id, "TERM", Duration::from_secs(5))?;
    /// assert!(!report.already_exited);
    /// assert_eq!(child.wait()?.signal(), Some(15));
    /// assert!(sprite.kill_session(&id, "TERM", Duration::ZERO)?.already_exited);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn kill_session(
        &self,
        id: &str,
        signal: &str,
        grace: std::time::Duration,
    ) -> Result<crate::KillReport> {
        crate::exec::kill_session(self, id, signal, grace)
    }

    /// Watches the sprite's listening ports: those listening now, then every change, whatever
    /// process makes it (`GET /v1/sprites/{name}/ports/watch`). Waits (at most 10 s) for the
    /// server's first snapshot before returning.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach): the upgrade's errors, or [`Error::Protocol`] when no
    /// snapshot comes.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-watch_ports", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// use std::time::Duration;
    /// use sprites::PortEventKind;
    /// let mut watch = sprite.watch_ports()?;
    /// let listen = "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); time.sleep(60)";
    /// let mut web = sprite.command("python3").args(["-c", listen]).spawn()?;
    /// let event = watch.recv_timeout(Duration::from_secs(30))?.expect("a listener appeared");
    /// assert_eq!((event.kind, event.pid), (PortEventKind::Opened, web.pid()));
    /// web.kill()?;
    /// # web.wait()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn watch_ports(&self) -> Result<crate::PortWatch> {
        crate::PortWatch::open(self)
    }

    /// Fetches the sprite's current [`SpriteInfo`].
    pub fn info(&self) -> Result<SpriteInfo> {
        let response = self
            .client
            .send(self.client.request("GET", &self.path("")), None)?;
        Client::decode(response)
    }

    /// Applies a partial update and returns the updated info.
    ///
    /// ```
    /// # fn main() -> sprites::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-7", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("s")?;
    /// use sprites::{SpriteUpdate, UrlSettings};
    /// sprite.update(&SpriteUpdate::new().labels(["prod"]).url_settings(UrlSettings::public()))?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn update(&self, update: &SpriteUpdate) -> Result<SpriteInfo> {
        let response = self.client.send(
            self.client.request("PUT", &self.path("")),
            Some(&update.to_json()),
        )?;
        // Some servers answer 204 or an empty body; fall back to reading the sprite.
        match Client::decode::<SpriteInfo>(response) {
            Ok(info) if !info.name.is_empty() => Ok(info),
            _ => self.info(),
        }
    }

    /// Deletes the sprite, its files and its checkpoints. Irreversible.
    pub fn delete(&self) -> Result<()> {
        let response = self
            .client
            .send(self.client.request("DELETE", &self.path("")), None)?;
        self.client.drain(response)
    }

    /// Upgrades the sprite to the latest runtime version.
    pub fn upgrade(&self) -> Result<()> {
        let request = self
            .client
            .request("POST", &self.path("/upgrade"))
            .timeout(std::time::Duration::from_secs(60));
        let response = self.client.send(request, None)?;
        self.client.drain(response)
    }
}

impl Client {
    /// Creates a sprite with default settings and returns its handle.
    ///
    /// ```
    /// # fn main() -> sprites::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-8", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// let sprite = client.create_sprite("scratch")?;
    /// sprite.delete()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_sprite(&self, name: &str) -> Result<Sprite> {
        self.create_sprite_with(name, &CreateOptions::default())
            .map(|(sprite, _)| sprite)
    }

    /// Creates a sprite with [`CreateOptions`] and returns its handle and the server's info.
    ///
    /// ```
    /// # fn main() -> sprites::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-9", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// use sprites::{CreateOptions, SpriteConfig};
    /// let options = CreateOptions::new().label("ci").config(SpriteConfig::new().ram_mb(4096)).wait_for_capacity(true);
    /// let (sprite, info) = client.create_sprite_with("builder", &options)?;
    /// println!("{} is {:?}", sprite.name(), info.status);
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_sprite_with(
        &self,
        name: &str,
        options: &CreateOptions,
    ) -> Result<(Sprite, SpriteInfo)> {
        if name.is_empty() {
            return Err(Error::InvalidInput(
                "a sprite name must not be empty".into(),
            ));
        }
        let mut body = json!({ "name": name });
        if let Some(config) = &options.config {
            body["config"] =
                serde_json::to_value(config).map_err(|e| Error::InvalidInput(e.to_string()))?;
        }
        if !options.labels.is_empty() {
            body["labels"] = json!(options.labels);
        }
        if let Some(url_settings) = &options.url_settings {
            body["url_settings"] = serde_json::to_value(url_settings)
                .map_err(|e| Error::InvalidInput(e.to_string()))?;
        }
        if options.wait_for_capacity {
            body["wait_for_capacity"] = Value::Bool(true);
        }
        let request = self
            .request("POST", "/v1/sprites")
            .timeout(self.create_timeout());
        let response = self.send(request, Some(&body))?;
        let mut info: SpriteInfo = Client::decode(response)?;
        if info.name.is_empty() {
            info.name = name.to_owned();
        }
        Ok((self.sprite(info.name.clone()), info))
    }

    /// A sprite named `<prefix>-<16 random hex digits>` that is deleted when the returned
    /// guard is dropped: for tests and scripts that must not leave sprites behind.
    /// [`TempSprite::keep`] keeps it; [`TempSprite::delete`] deletes it and returns the
    /// verdict, which drop can only log (through the `log` crate).
    ///
    /// # Errors
    ///
    /// As [`create_sprite`](Self::create_sprite).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-temp", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// let name = {
    ///     let sprite = client.create_temp_sprite("ci")?;
    ///     assert!(sprite.command("true").status()?.success());
    ///     sprite.name().to_owned()
    /// }; // deleted here
    /// assert!(client.get_sprite(&name).unwrap_err().api().is_some_and(|a| a.is_not_found()));
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn create_temp_sprite(&self, prefix: &str) -> Result<TempSprite> {
        let name = format!("{prefix}-{:016x}", crate::fs::random_id());
        Ok(TempSprite {
            sprite: Some(self.create_sprite(&name)?),
        })
    }

    /// The sprite with this name, created (with default settings) if it does not exist.
    /// Safe against a concurrent creator: if the create loses a race, the winner's sprite is
    /// returned.
    ///
    /// # Errors
    ///
    /// As [`get_sprite`](Self::get_sprite) and [`create_sprite`](Self::create_sprite), except
    /// that "not found" and "already exists" are handled.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-get-or-create", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// let first = client.get_or_create_sprite("builder")?; // created
    /// first.fs_at(&dir).write("marker", "1")?;
    /// let again = client.get_or_create_sprite("builder")?; // the same one
    /// assert_eq!(again.fs_at(&dir).read_to_string("marker")?, "1");
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn get_or_create_sprite(&self, name: &str) -> Result<Sprite> {
        match self.get_sprite(name) {
            Ok(info) => return Ok(self.sprite(info.name)),
            Err(Error::Api(api)) if api.is_not_found() => {}
            Err(err) => return Err(err),
        }
        match self.create_sprite(name) {
            Ok(sprite) => Ok(sprite),
            Err(Error::Api(api)) if api.is_already_exists() => {
                let info = self.get_sprite(name)?;
                Ok(self.sprite(info.name))
            }
            Err(err) => Err(err),
        }
    }

    /// Fetches one sprite's info.
    pub fn get_sprite(&self, name: &str) -> Result<SpriteInfo> {
        self.sprite(name).info()
    }

    /// Deletes a sprite by name.
    pub fn delete_sprite(&self, name: &str) -> Result<()> {
        self.sprite(name).delete()
    }

    /// Fetches one page of sprites.
    ///
    /// ```
    /// # fn main() -> sprites::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-10", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// use sprites::ListOptions;
    /// let page = client.list_sprites(&ListOptions::new().prefix("ci-").max_results(10))?;
    /// if let Some(token) = page.next_token() {
    ///     let next = client.list_sprites(&ListOptions::new().prefix("ci-").continuation_token(token))?;
    /// }
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn list_sprites(&self, options: &ListOptions) -> Result<SpritePage> {
        let mut query = Query::new();
        query.push_opt("prefix", options.prefix.as_deref());
        if let Some(max) = options.max_results {
            query.push("max_results", &max.to_string());
        }
        query.push_opt("continuation_token", options.continuation_token.as_deref());
        let response = self.send(
            self.request("GET", &format!("/v1/sprites{}", query.as_str())),
            None,
        )?;
        Client::decode(response)
    }

    /// Every sprite, fetching pages lazily as the iterator advances.
    ///
    /// ```
    /// # fn main() -> sprites::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-sprite-11", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// let names: Vec<String> = client.sprites().map(|s| s.map(|s| s.name)).collect::<Result<_, _>>()?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn sprites(&self) -> SpriteIter {
        self.sprites_with(ListOptions::new())
    }

    /// Every sprite matching `options` (its `continuation_token` is the starting point).
    pub fn sprites_with(&self, options: ListOptions) -> SpriteIter {
        SpriteIter {
            client: self.clone(),
            seen: options.continuation_token.iter().cloned().collect(),
            options,
            buffer: Vec::new().into_iter(),
            done: false,
        }
    }
}

/// A sprite deleted when this guard is dropped; from [`Client::create_temp_sprite`].
/// Dereferences to [`Sprite`].
#[derive(Debug)]
pub struct TempSprite {
    /// `None` once kept or deleted.
    sprite: Option<Sprite>,
}

impl TempSprite {
    /// Disarms the guard: the sprite outlives it.
    pub fn keep(mut self) -> Sprite {
        self.sprite
            .take()
            .expect("a TempSprite holds its sprite until kept or deleted")
    }

    /// Deletes the sprite now and returns the verdict (drop can only log it).
    ///
    /// # Errors
    ///
    /// As [`Sprite::delete`].
    pub fn delete(mut self) -> Result<()> {
        match self.sprite.take() {
            Some(sprite) => sprite.delete(),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for TempSprite {
    type Target = Sprite;
    fn deref(&self) -> &Sprite {
        self.sprite
            .as_ref()
            .expect("a TempSprite holds its sprite until kept or deleted")
    }
}

impl Drop for TempSprite {
    fn drop(&mut self) {
        if let Some(sprite) = self.sprite.take()
            && let Err(err) = sprite.delete()
        {
            log::error!(
                "sprites: deleting the temporary sprite {} failed: {err}",
                sprite.name()
            );
        }
    }
}

/// What to create a sprite with; every field is optional.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CreateOptions {
    /// Requested resources.
    pub config: Option<SpriteConfig>,
    /// Labels.
    pub labels: Vec<String>,
    /// URL access.
    pub url_settings: Option<UrlSettings>,
    /// Block until capacity is available instead of failing.
    pub wait_for_capacity: bool,
}

impl CreateOptions {
    /// Defaults: nothing requested.
    pub fn new() -> CreateOptions {
        CreateOptions::default()
    }
    /// Requests resources.
    pub fn config(mut self, config: SpriteConfig) -> Self {
        self.config = Some(config);
        self
    }
    /// Adds a label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.labels.push(label.into());
        self
    }
    /// Sets URL access.
    pub fn url_settings(mut self, url_settings: UrlSettings) -> Self {
        self.url_settings = Some(url_settings);
        self
    }
    /// Waits for capacity instead of failing when there is none.
    pub fn wait_for_capacity(mut self, wait: bool) -> Self {
        self.wait_for_capacity = wait;
        self
    }
}

/// A partial update for [`Sprite::update`]; fields left unset are unchanged.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SpriteUpdate {
    /// New URL settings.
    pub url_settings: Option<UrlSettings>,
    /// Replaces the whole label set.
    pub labels: Option<Vec<String>>,
    /// Removes every label.
    pub clear_labels: bool,
}

impl SpriteUpdate {
    /// An update that changes nothing yet.
    pub fn new() -> SpriteUpdate {
        SpriteUpdate::default()
    }
    /// Sets URL access.
    pub fn url_settings(mut self, url_settings: UrlSettings) -> Self {
        self.url_settings = Some(url_settings);
        self
    }
    /// Replaces the labels with these. An empty list clears them.
    pub fn labels<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.labels = Some(labels.into_iter().map(Into::into).collect());
        self
    }
    /// Removes every label.
    pub fn clear_labels(mut self) -> Self {
        self.clear_labels = true;
        self
    }

    fn to_json(&self) -> Value {
        let mut body = json!({});
        if let Some(url_settings) = &self.url_settings {
            body["url_settings"] = serde_json::to_value(url_settings).unwrap_or(Value::Null);
        }
        match &self.labels {
            // An empty replacement set means "no labels"; say so explicitly, since some servers
            // drop empty arrays (PROTOCOL.md §5.4).
            Some(labels) if labels.is_empty() => body["clear_labels"] = Value::Bool(true),
            Some(labels) => body["labels"] = json!(labels),
            None => {}
        }
        if self.clear_labels {
            body["clear_labels"] = Value::Bool(true);
        }
        body
    }
}

/// Filters and paging for [`Client::list_sprites`] and [`Client::sprites_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListOptions {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Page size (the API documents 1–50).
    pub max_results: Option<u32>,
    /// Where to resume, from [`SpritePage::next_token`].
    pub continuation_token: Option<String>,
}

impl ListOptions {
    /// No filter, server-default page size.
    pub fn new() -> ListOptions {
        ListOptions::default()
    }
    /// Only names starting with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// Page size.
    pub fn max_results(mut self, max: u32) -> Self {
        self.max_results = Some(max);
        self
    }
    /// Resume from a previous page's token.
    pub fn continuation_token(mut self, token: impl Into<String>) -> Self {
        self.continuation_token = Some(token.into());
        self
    }
}

/// Iterator over every sprite, one page request at a time. Yields `Err` once and stops if a
/// page request fails, and stops after a page whose continuation token was already used (a
/// server that cycles through tokens would otherwise be listed forever).
#[derive(Debug)]
pub struct SpriteIter {
    client: Client,
    options: ListOptions,
    /// Every token sent so far.
    seen: std::collections::HashSet<String>,
    buffer: std::vec::IntoIter<SpriteInfo>,
    done: bool,
}

impl Iterator for SpriteIter {
    type Item = Result<SpriteInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(info) = self.buffer.next() {
                return Some(Ok(info));
            }
            if self.done {
                return None;
            }
            match self.client.list_sprites(&self.options) {
                Ok(page) => {
                    match page.next_token() {
                        // A token seen before (the last one, or any earlier one: A, B, A, …)
                        // would repeat pages forever.
                        Some(token) if self.seen.insert(token.to_owned()) => {
                            self.options.continuation_token = Some(token.to_owned());
                        }
                        _ => self.done = true,
                    }
                    self.buffer = page.sprites.into_iter();
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }
}
