//! The floor under stdin → `cat` → stdout: the same path with none of this project's code in
//! it. Bytes go from a client over loopback TCP to a relay, through a local `cat`'s stdin
//! and stdout pipes, and back over the same TCP connection — two TCP crossings, two pipe
//! crossings and `cat`'s own copy, as through a sprite, without WebSocket framing, masking,
//! a sandbox or any thread hand-over beyond the relay's two copy loops. Best of 64 KiB,
//! 256 KiB and 1 MiB buffers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

/// The best rate of the local relay over the three buffer sizes, in MiB/s.
pub fn local_cat_relay_best_mib_s(total: usize) -> std::io::Result<f64> {
    let mut best = 0f64;
    for size in [64 << 10, 256 << 10, 1 << 20] {
        best = best.max(local_cat_relay_mib_s(total, size)?);
    }
    Ok(best)
}

#[cfg(target_os = "linux")]
fn grow_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor we own; failure only leaves the default size.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

#[cfg(not(target_os = "linux"))]
fn grow_pipe<T>(_pipe: &T) {}

fn local_cat_relay_mib_s(total: usize, size: usize) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let relay = std::thread::spawn(move || -> std::io::Result<()> {
        let (conn, _) = listener.accept()?;
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (mut stdin, mut stdout) = (cat.stdin.take().unwrap(), cat.stdout.take().unwrap());
        // 1 MiB pipes, as sprites-local asks for its commands' pipes: the floor must be the
        // best this shape does here.
        grow_pipe(&stdin);
        grow_pipe(&stdout);
        let mut from_client = conn.try_clone()?;
        let to_cat = std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; size];
            loop {
                let n = from_client.read(&mut buf)?;
                if n == 0 {
                    return Ok(()); // dropping stdin: cat sees EOF
                }
                stdin.write_all(&buf[..n])?;
            }
        });
        let mut to_client = conn;
        let mut buf = vec![0u8; size];
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to_client.write_all(&buf[..n])?;
        }
        to_client.shutdown(Shutdown::Write)?;
        to_cat.join().expect("relay thread")?;
        cat.wait()?;
        Ok(())
    });
    let started = Instant::now();
    let stream = TcpStream::connect(addr)?;
    let mut sender = stream.try_clone()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let buf = vec![7u8; size];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            sender.write_all(&buf[..n])?;
            left -= n;
        }
        sender.shutdown(Shutdown::Write)
    });
    let mut reader = stream;
    let got = super::count_to_eof(&mut reader, size)?;
    let secs = started.elapsed().as_secs_f64();
    writer.join().expect("writer thread")?;
    relay.join().expect("relay")?;
    assert_eq!(got, total);
    Ok(total as f64 / MIB / secs)
}
