//! Copying files and directory trees between this machine and a sprite, with progress:
//! single files through the filesystem API, trees as one tar stream over one command (one
//! round trip, whatever the number of files).

use crate::Stdio;
use crate::fs::Filesystem;
use crate::tar::{self, EntryKind, Header};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// How far a transfer has got, passed to the progress callback after each piece of data and
/// returned at the end.
///
/// `bytes` counts file contents (not tar headers), `files` the regular files finished. The
/// totals are known up front for uploads (a local walk) and single-file downloads (the
/// declared size); for a directory download they are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of file contents transferred so far.
    pub bytes: u64,
    /// Files transferred completely so far.
    pub files: u64,
    /// All the bytes to transfer, when known.
    pub total_bytes: Option<u64>,
    /// All the files to transfer, when known.
    pub total_files: Option<u64>,
}

/// Pieces read and written at a time: large enough for throughput, small enough for a
/// smooth progress bar.
const PIECE: usize = 256 * 1024;

/// How much of a failed tar's stderr an error keeps.
const STDERR_KEEP: usize = 4096;

impl Filesystem {
    /// Copies the local file `local` to `remote` on the sprite (created or replaced; its parent
    /// must exist), keeping the local permission bits on Unix. Streams: any size in constant
    /// memory. `progress` is called after each 256 KiB and at the end.
    ///
    /// # Errors
    ///
    /// Local errors reading `local` (`NotFound`, `IsADirectory`, ...) and the errors of
    /// [`Filesystem::create`] and [`File::close`](crate::fs::File::close) for `remote`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-upload", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let local = std::env::temp_dir().join(format!("upload-{}.txt", std::process::id()));
    /// std::fs::write(&local, "from this machine\n")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// let done = fs.upload(&local, "copy.txt", |p| println!("{} of {:?} bytes", p.bytes, p.total_bytes))?;
    /// assert_eq!((done.bytes, done.files), (18, 1));
    /// assert_eq!(fs.read_to_string("copy.txt")?, "from this machine\n");
    /// # std::fs::remove_file(local)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn upload(
        &self,
        local: impl AsRef<Path>,
        remote: impl AsRef<Path>,
        mut progress: impl FnMut(&Progress),
    ) -> io::Result<Progress> {
        let mut source = std::fs::File::open(local.as_ref())?;
        let meta = source.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!(
                    "{} is a directory: use upload_dir",
                    local.as_ref().display()
                ),
            ));
        }
        let mut state = Progress {
            total_bytes: Some(meta.len()),
            total_files: Some(1),
            ..Progress::default()
        };
        let file = self
            .options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(local_mode(&meta))
            .open(remote)?;
        copy_with_progress(&mut source, &mut &file, &mut state, &mut progress)?;
        file.close()?;
        state.files = 1;
        progress(&state);
        Ok(state)
    }

    /// Copies the file `remote` on the sprite to `local` on this machine (created or
    /// replaced). Streams: any size in constant memory.
    ///
    /// # Errors
    ///
    /// The errors of [`Filesystem::open`] for `remote` and local errors creating or writing
    /// `local`.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-download", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.write("report.csv", "a,b\n1,2\n")?;
    /// let local = std::env::temp_dir().join(format!("report-{}.csv", std::process::id()));
    /// let done = fs.download("report.csv", &local, |_| {})?;
    /// assert_eq!(done.total_bytes, Some(8));
    /// assert_eq!(std::fs::read_to_string(&local)?, "a,b\n1,2\n");
    /// # std::fs::remove_file(local)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn download(
        &self,
        remote: impl AsRef<Path>,
        local: impl AsRef<Path>,
        mut progress: impl FnMut(&Progress),
    ) -> io::Result<Progress> {
        let mut source = self.open(remote)?;
        let mut state = Progress {
            total_bytes: source.declared_len(),
            total_files: Some(1),
            ..Progress::default()
        };
        let mut target = std::fs::File::create(local.as_ref())?;
        copy_with_progress(&mut source, &mut target, &mut state, &mut progress)?;
        target.sync_all()?;
        state.files = 1;
        progress(&state);
        Ok(state)
    }

    /// Copies the local directory tree `local` into `remote` on the sprite (created with its
    /// parents if missing; files there are replaced, others left alone), as one tar stream
    /// into `tar -x` on the sprite: one command, however many files. Regular files,
    /// directories and symlinks are copied with their permission bits and modification times;
    /// other kinds of file are skipped. The sprite needs `sh`, `mkdir` and `tar`.
    ///
    /// # Errors
    ///
    /// Local errors walking `local` (`NotFound`, `NotADirectory`, names that are not UTF-8),
    /// the errors of running a command, and [`Error::CommandFailed`](crate::Error::CommandFailed)
    /// with tar's complaint when extraction fails on the sprite.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-upload-dir", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// let project = std::env::temp_dir().join(format!("project-{}", std::process::id()));
    /// std::fs::create_dir_all(project.join("src"))?;
    /// std::fs::write(project.join("src/main.py"), "print('hi')\n")?;
    /// std::fs::write(project.join("README"), "hello\n")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// let done = fs.upload_dir(&project, "project", |p| {
    ///     println!("{}/{} files", p.files, p.total_files.unwrap_or(0));
    /// })?;
    /// assert_eq!((done.files, done.bytes), (2, 18));
    /// assert_eq!(fs.read_to_string("project/src/main.py")?, "print('hi')\n");
    /// # std::fs::remove_dir_all(project)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn upload_dir(
        &self,
        local: impl AsRef<Path>,
        remote: impl AsRef<Path>,
        mut progress: impl FnMut(&Progress),
    ) -> io::Result<Progress> {
        let local = local.as_ref();
        let remote = self.resolve(remote.as_ref())?;
        let entries = walk(local)?;
        let mut state = Progress {
            total_bytes: Some(entries.iter().map(|e| e.1.size).sum()),
            total_files: Some(
                entries
                    .iter()
                    .filter(|e| e.1.kind == EntryKind::File)
                    .count() as u64,
            ),
            ..Progress::default()
        };
        progress(&state);
        let mut child = self
            .sprite()
            .command("sh")
            .args([
                "-c",
                r#"mkdir -p -- "$1" && exec tar -x -f - -C "$1" --no-same-owner"#,
                "sh",
                &remote,
            ])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stderr = child.stderr.take().expect("piped stderr");
        // stderr is drained beside the upload: a tar that complains a lot must not stall on a
        // full pipe while we wait for it to read.
        let (sent, stderr_tail) = std::thread::scope(|scope| {
            let tail = scope.spawn(move || read_tail(stderr));
            let sent = send_tree(&entries, stdin, &mut state, &mut progress);
            (sent, tail.join().unwrap_or_default())
        });
        let status = child.wait()?;
        match sent {
            // The remote tar stopped reading: its own complaint is the cause.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe && !status.success() => {
                Err(crate::Error::CommandFailed {
                    status,
                    stderr_tail,
                }
                .into())
            }
            Err(e) => Err(e),
            Ok(()) if !status.success() => Err(crate::Error::CommandFailed {
                status,
                stderr_tail,
            }
            .into()),
            Ok(()) => {
                progress(&state);
                Ok(state)
            }
        }
    }

    /// Copies the directory tree `remote` on the sprite into `local` on this machine (created
    /// with its parents if missing), as one tar stream out of `tar -c` on the sprite.
    /// Regular files, directories, symlinks and hard links are copied with their permission
    /// bits and modification times; other kinds of file are skipped.
    ///
    /// Nothing is written outside `local`: entries with absolute paths or `..` are refused,
    /// symlinks are created after everything else (so none can redirect a later entry), and
    /// an existing symlink inside `local` is never followed.
    ///
    /// # Errors
    ///
    /// `NotFound`/`NotADirectory` for `remote`, `InvalidData` for an archive that is corrupt or
    /// escapes `local`, local errors writing, and [`Error::CommandFailed`](crate::Error::CommandFailed)
    /// when tar fails on the sprite.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("sprites-doc-{}-download-dir", std::process::id()));
    /// # let server = sprites_local::Server::builder().addr("127.0.0.1:0").token("t").data_dir(&dir).runtime(sprites_local::Runtime::Host).start()?;
    /// # let client = sprites::Client::builder().base_url(server.url()).token("t").build()?;
    /// # let sprite = client.create_sprite("doc")?;
    /// # std::fs::create_dir_all(dir.join("work"))?; let fs = sprite.fs_at(dir.join("work"));
    /// fs.create_dir_all("results/logs")?;
    /// fs.write("results/logs/run.log", "ok\n")?;
    /// let local = std::env::temp_dir().join(format!("results-{}", std::process::id()));
    /// let done = fs.download_dir("results", &local, |p| println!("{} bytes", p.bytes))?;
    /// assert_eq!(done.files, 1);
    /// assert_eq!(std::fs::read_to_string(local.join("logs/run.log"))?, "ok\n");
    /// # std::fs::remove_dir_all(local)?;
    /// # drop(server); let _ = std::fs::remove_dir_all(dir);
    /// # Ok(()) }
    /// ```
    pub fn download_dir(
        &self,
        remote: impl AsRef<Path>,
        local: impl AsRef<Path>,
        mut progress: impl FnMut(&Progress),
    ) -> io::Result<Progress> {
        let remote = self.resolve(remote.as_ref())?;
        if !self.metadata(&remote)?.is_dir() {
            return Err(crate::fs::not_a_directory(&remote));
        }
        let local = local.as_ref();
        std::fs::create_dir_all(local)?;
        let mut child = self
            .sprite()
            .command("tar")
            .args(["-c", "-f", "-", "-C", &remote, "."])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut state = Progress::default();
        let (extracted, stderr_tail) = std::thread::scope(|scope| {
            let tail = scope.spawn(move || read_tail(stderr));
            let extracted = extract(stdout, local, &mut state, &mut progress);
            if extracted.is_err() {
                // Stop the producer (and so its stderr, which the tail waits for).
                let _ = child.kill();
            }
            (extracted, tail.join().unwrap_or_default())
        });
        let status = child.wait()?;
        extracted?;
        if !status.success() {
            return Err(crate::Error::CommandFailed {
                status,
                stderr_tail,
            }
            .into());
        }
        progress(&state);
        Ok(state)
    }
}

/// Copies `from` to `to` in pieces, counting bytes.
fn copy_with_progress(
    from: &mut impl Read,
    to: &mut impl Write,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
) -> io::Result<()> {
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        state.bytes += n as u64;
        progress(state);
    }
}

/// The end of a stream, decoded lossily: what a failing tool said last.
fn read_tail(mut from: impl Read) -> String {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * STDERR_KEEP {
            tail.drain(..tail.len() - STDERR_KEEP);
        }
    }
    let start = tail.len().saturating_sub(STDERR_KEEP);
    String::from_utf8_lossy(&tail[start..]).into_owned()
}

#[cfg(unix)]
fn local_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn local_mode(meta: &std::fs::Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

fn mtime(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Every entry below `root`, parents before children, in name order: (local path, header).
fn walk(root: &Path) -> io::Result<Vec<(PathBuf, Header)>> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory: use upload", root.display()),
        ));
    }
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)?.collect::<io::Result<_>>()?;
        children.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let name = child.file_name();
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{:?} is not valid UTF-8, which the API requires",
                        child.path()
                    ),
                )
            })?;
            let path = format!("{prefix}{name}");
            let meta = std::fs::symlink_metadata(child.path())?;
            let kind = if meta.is_dir() {
                EntryKind::Dir
            } else if meta.is_file() {
                EntryKind::File
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(child.path())?;
                EntryKind::Symlink(target.to_str().map(str::to_owned).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("the target of {:?} is not valid UTF-8", child.path()),
                    )
                })?)
            } else {
                continue; // fifos, sockets, devices: nothing to copy
            };
            let header = Header {
                path: path.clone(),
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                kind: kind.clone(),
                mode: local_mode(&meta),
                mtime: mtime(&meta),
            };
            if kind == EntryKind::Dir {
                subdirs.push((child.path(), format!("{path}/")));
            }
            out.push((child.path(), header));
        }
        // Depth first in name order: reversed onto the stack.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Writes the tar stream of `entries` to the remote tar's stdin.
fn send_tree(
    entries: &[(PathBuf, Header)],
    out: impl Write,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
) -> io::Result<()> {
    let mut writer = tar::Writer::new(io::BufWriter::with_capacity(PIECE, out));
    let mut buf = vec![0u8; PIECE];
    for (local, header) in entries {
        if header.kind != EntryKind::File {
            writer.header(header)?;
            continue;
        }
        let mut file = std::fs::File::open(local)?;
        writer.header(header)?;
        // Exactly the size announced, even if the file changes meanwhile: a tar stream has
        // no way to take back a header.
        let mut left = header.size;
        while left > 0 {
            let want = buf.len().min(left.min(usize::MAX as u64) as usize);
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                // The file shrank: pad with zeros rather than corrupt the stream.
                buf[..want].fill(0);
                writer.data(&buf[..want])?;
                left -= want as u64;
                continue;
            }
            writer.data(&buf[..n])?;
            left -= n as u64;
            state.bytes += n as u64;
            progress(state);
        }
        writer.pad(header.size)?;
        state.files += 1;
        progress(state);
    }
    // Dropping the writer's output (the BufWriter around ChildStdin) is the remote EOF.
    drop(writer.finish()?);
    Ok(())
}

/// An archive path made safe: relative, no `..`, no empty or `.` components; `None` for the
/// archive's root itself.
fn safe_relative(path: &str) -> io::Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the archive entry {path:?} points outside the destination"),
                ));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Refuses to write through a symlink: every existing ancestor of `relative` below `root`
/// must be a real directory.
fn check_ancestors(root: &Path, relative: &Path) -> io::Result<()> {
    let mut at = root.to_path_buf();
    let parents: Vec<_> = relative.components().collect();
    for component in &parents[..parents.len().saturating_sub(1)] {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a directory (a symlink is never followed)",
                        at.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(&at)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Extracts the tar stream `input` into `root`.
fn extract(
    input: impl Read,
    root: &Path,
    state: &mut Progress,
    progress: &mut impl FnMut(&Progress),
) -> io::Result<()> {
    let mut reader = tar::Reader::new(io::BufReader::with_capacity(PIECE, input));
    let mut symlinks = Vec::new();
    let mut dir_modes = Vec::new();
    let mut buf = vec![0u8; PIECE];
    while let Some(header) = reader.next_header()? {
        let Some(relative) = safe_relative(&header.path)? else {
            continue;
        };
        check_ancestors(root, &relative)?;
        let target = root.join(&relative);
        match &header.kind {
            EntryKind::Dir => {
                match std::fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a directory", target.display()),
                        ));
                    }
                    Err(_) => std::fs::create_dir(&target)?,
                }
                // Applied at the end: a read-only directory would refuse its own children.
                dir_modes.push((target, header.mode, header.mtime));
            }
            EntryKind::File => {
                // Replace what is there, never write through it (it could be a symlink).
                if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                    std::fs::remove_file(&target)?;
                }
                let mut file = std::fs::File::create(&target)?;
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])?;
                    state.bytes += n as u64;
                    progress(state);
                }
                set_times_and_mode(&file, header.mode, header.mtime)?;
                state.files += 1;
                progress(state);
            }
            EntryKind::HardLink(to) => {
                let Some(to) = safe_relative(to)? else {
                    continue;
                };
                check_ancestors(root, &to)?;
                if std::fs::symlink_metadata(&target).is_ok() {
                    std::fs::remove_file(&target)?;
                }
                std::fs::hard_link(root.join(to), &target)?;
            }
            EntryKind::Symlink(to) => symlinks.push((target, to.clone())),
            EntryKind::Other => {}
        }
    }
    // After the files, so that no entry above could be written through one of them.
    for (target, to) in symlinks {
        if std::fs::symlink_metadata(&target).is_ok() {
            std::fs::remove_file(&target)?;
        }
        make_symlink(&to, &target)?;
    }
    // Last, deepest first: a read-only directory refuses new entries, and setting a
    // directory's time before filling it would be undone by the filling.
    for (target, mode, mtime) in dir_modes.into_iter().rev() {
        set_dir_times_and_mode(&target, mode, mtime)?;
    }
    Ok(())
}

#[cfg(unix)]
fn set_dir_times_and_mode(dir: &Path, mode: u32, mtime: u64) -> io::Result<()> {
    set_times_and_mode(&std::fs::File::open(dir)?, mode, mtime)
}

/// Windows opens no directory as a `File` here; its permission bits mean nothing there.
#[cfg(not(unix))]
fn set_dir_times_and_mode(_dir: &Path, _mode: u32, _mtime: u64) -> io::Result<()> {
    Ok(())
}

fn set_times_and_mode(file: &std::fs::File, mode: u32, mtime: u64) -> io::Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    file.set_modified(time)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Never setuid/setgid/sticky from a remote archive.
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

#[cfg(unix)]
fn make_symlink(to: &str, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(to, at)
}

#[cfg(windows)]
fn make_symlink(to: &str, at: &Path) -> io::Result<()> {
    // Windows needs to know what the link points to; a missing target is taken as a file.
    let target = at.parent().unwrap_or(Path::new(".")).join(to);
    if target.is_dir() {
        std::os::windows::fs::symlink_dir(to, at)
    } else {
        std::os::windows::fs::symlink_file(to, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside() {
        assert_eq!(safe_relative("./a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(safe_relative("./").unwrap(), None);
        assert_eq!(safe_relative(".").unwrap(), None);
        for bad in ["../x", "a/../../x", "/etc/passwd", "a/.."] {
            assert_eq!(
                safe_relative(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{bad}"
            );
        }
    }

    fn archive(entries: &[(&str, EntryKind, &[u8])]) -> Vec<u8> {
        let mut writer = tar::Writer::new(Vec::new());
        for (path, kind, data) in entries {
            let header = Header {
                path: (*path).into(),
                kind: kind.clone(),
                mode: 0o644,
                size: data.len() as u64,
                mtime: 1_600_000_000,
            };
            writer.header(&header).unwrap();
            writer.data(data).unwrap();
            writer.pad(data.len() as u64).unwrap();
        }
        writer.finish().unwrap()
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sprites-extract-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn extraction_writes_files_links_and_counts_progress() {
        let root = scratch("ok");
        let data = archive(&[
            ("./", EntryKind::Dir, b""),
            ("./d", EntryKind::Dir, b""),
            ("./d/f.txt", EntryKind::File, b"content"),
            ("./l", EntryKind::Symlink("d/f.txt".into()), b""),
            ("./h", EntryKind::HardLink("./d/f.txt".into()), b""),
        ]);
        let mut state = Progress::default();
        let mut calls = Vec::new();
        extract(&data[..], &root, &mut state, &mut |p| calls.push(*p)).unwrap();
        assert_eq!((state.files, state.bytes), (1, 7));
        assert!(calls.windows(2).all(|w| w[0].bytes <= w[1].bytes));
        assert_eq!(std::fs::read_to_string(root.join("l")).unwrap(), "content");
        assert_eq!(std::fs::read_to_string(root.join("h")).unwrap(), "content");
        let mtime = std::fs::metadata(root.join("d/f.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_600_000_000
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn extraction_never_writes_outside_the_destination() {
        let outside = scratch("outside");
        let root = scratch("inside");
        // Escapes by name.
        for path in ["../escaped", "/tmp/escaped", "a/../../escaped"] {
            let data = archive(&[(path, EntryKind::File, b"x")]);
            let err = extract(&data[..], &root, &mut Progress::default(), &mut |_| {}).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{path}");
        }
        // Escape through a symlink in the archive: the link is made last, so the file lands
        // in a real directory and the link cannot replace it.
        let link_to = outside.to_str().unwrap().to_owned();
        let data = archive(&[
            ("a", EntryKind::Symlink(link_to.clone()), b""),
            ("a/evil", EntryKind::File, b"x"),
        ]);
        let _ = extract(&data[..], &root, &mut Progress::default(), &mut |_| {});
        assert!(
            !outside.join("evil").exists(),
            "written through an archive symlink"
        );
        // Escape through a symlink already in the destination: refused.
        std::os::unix::fs::symlink(&outside, root.join("pre")).unwrap();
        let data = archive(&[("pre/evil", EntryKind::File, b"x")]);
        let err = extract(&data[..], &root, &mut Progress::default(), &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A file entry replaces a symlink rather than writing through it.
        std::os::unix::fs::symlink(outside.join("target"), root.join("swap")).unwrap();
        let data = archive(&[("swap", EntryKind::File, b"new")]);
        extract(&data[..], &root, &mut Progress::default(), &mut |_| {}).unwrap();
        assert!(!outside.join("target").exists());
        assert_eq!(std::fs::read(root.join("swap")).unwrap(), b"new");
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing outside"
        );
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_file_that_shrinks_while_sent_is_padded_to_its_announced_size() {
        let dir = scratch("shrink");
        let file = dir.join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        let header = Header {
            path: "f".into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: 600, // what a walk saw before the file shrank
            mtime: 0,
        };
        let mut archive = Vec::new();
        let mut state = Progress::default();
        send_tree(&[(file, header)], &mut archive, &mut state, &mut |_| {}).unwrap();
        assert_eq!((state.bytes, state.files), (10, 1));
        let mut reader = tar::Reader::new(&archive[..]);
        assert_eq!(reader.next_header().unwrap().unwrap().size, 600);
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        assert_eq!(&data[..10], b"0123456789");
        assert!(data[10..].iter().all(|&b| b == 0) && data.len() == 600);
        assert_eq!(reader.next_header().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn extraction_creates_missing_parents_and_merges_into_existing_directories() {
        let root = scratch("merge");
        let data = archive(&[
            ("a/b/deep.txt", EntryKind::File, b"d"),
            ("a", EntryKind::Dir, b""),
        ]);
        extract(&data[..], &root, &mut Progress::default(), &mut |_| {}).unwrap();
        assert_eq!(std::fs::read(root.join("a/b/deep.txt")).unwrap(), b"d");
        // Again, into what is now there: directories merge, files are replaced.
        extract(&data[..], &root, &mut Progress::default(), &mut |_| {}).unwrap();
        // A directory entry where a file is: refused.
        std::fs::write(root.join("plain"), "p").unwrap();
        let data = archive(&[("plain", EntryKind::Dir, b"")]);
        let err = extract(&data[..], &root, &mut Progress::default(), &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn tails_keep_the_end() {
        let text = format!("{}THE END", "x".repeat(100_000));
        let tail = read_tail(text.as_bytes());
        assert_eq!(tail.len(), STDERR_KEEP);
        assert!(tail.ends_with("THE END"));
        assert_eq!(read_tail(&b"short"[..]), "short");
    }
}
