//! The TCP proxy's figures (PROTOCOL.md §10) and the loopback TCP baseline they compare with.

use sprites::{Sprite, Stdio};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

/// Loopback TCP with each buffer size from 64 KiB to 1 MiB (writer and reader alike):
/// the best rate, and each size's.
pub fn tcp_best_mib_s(total: usize) -> std::io::Result<(f64, Vec<(usize, f64)>)> {
    let mut all = Vec::new();
    for size in [64 << 10, 256 << 10, 1 << 20] {
        all.push((size, tcp_mib_s(total, size)?));
    }
    let best = all.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    Ok((best, all))
}

/// Bytes through one loopback TCP connection in `size` writes and reads, in MiB/s.
pub fn tcp_mib_s(total: usize, size: usize) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let buf = vec![0u8; size];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            stream.write_all(&buf[..n])?;
            left -= n;
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept()?;
    let started = Instant::now();
    let got = super::count_to_eof(&mut stream, size)?;
    let secs = started.elapsed().as_secs_f64();
    writer.join().expect("writer thread")?;
    assert_eq!(got, total);
    Ok(total as f64 / MIB / secs)
}

/// A source and a sink in the sprite (python3 on its loopback): the first connection gets
/// `total` bytes and EOF, the second is read to EOF and its byte count printed.
const SOURCE_AND_SINK: &str = "import socket,sys\n\
    s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(2)\n\
    print(s.getsockname()[1], flush=True)\n\
    total=int(sys.argv[1]); chunk=memoryview(bytes(1<<20))\n\
    c,_=s.accept(); left=total\n\
    while left>0:\n\
    \x20   n=min(left,len(chunk)); c.sendall(chunk[:n]); left-=n\n\
    c.close()\n\
    c,_=s.accept(); buf=bytearray(1<<20); got=0\n\
    while True:\n\
    \x20   n=c.recv_into(buf)\n\
    \x20   if not n: break\n\
    \x20   got+=n\n\
    print(got, flush=True)\n";

/// Bytes through [`Sprite::proxy_socket`]: (sprite → client, client → sprite) in MiB/s.
pub fn proxy_mib_s(sprite: &Sprite, total: usize) -> std::io::Result<(f64, f64)> {
    let mut child = sprite
        .command("python3")
        .args(["-c", SOURCE_AND_SINK, &total.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    let port: u16 = line.trim().parse().map_err(std::io::Error::other)?;
    let target = format!("localhost:{port}");

    let started = Instant::now();
    let mut down = sprite.proxy_socket(&target)?;
    let got = super::count_to_eof(&mut down, 1 << 20)?;
    let down_rate = total as f64 / MIB / started.elapsed().as_secs_f64();
    assert_eq!(got, total);
    drop(down);

    let started = Instant::now();
    let mut up = sprite.proxy_socket(&target)?;
    let buf = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        up.write_all(&buf[..n])?;
        left -= n;
    }
    up.shutdown(Shutdown::Write)?;
    line.clear();
    out.read_line(&mut line)?;
    let up_rate = total as f64 / MIB / started.elapsed().as_secs_f64();
    assert_eq!(line.trim(), total.to_string(), "the sink's count");
    drop(up);
    child.wait()?;
    Ok((down_rate, up_rate))
}

/// The floor under the proxy: a source's bytes over loopback TCP to a relay that copies them
/// onto a second loopback TCP connection to the reader — the proxy's two TCP crossings and
/// one copy loop, without WebSocket framing, masking or the sandbox. Best of 64 KiB, 256 KiB
/// and 1 MiB relay buffers, in MiB/s.
pub fn relay_floor_best_mib_s(total: usize) -> std::io::Result<f64> {
    let mut best = 0f64;
    for size in [64 << 10, 256 << 10, 1 << 20] {
        best = best.max(relay_floor_mib_s(total, size)?);
    }
    Ok(best)
}

fn relay_floor_mib_s(total: usize, size: usize) -> std::io::Result<f64> {
    let source = TcpListener::bind("127.0.0.1:0")?;
    let source_addr = source.local_addr()?;
    let front = TcpListener::bind("127.0.0.1:0")?;
    let front_addr = front.local_addr()?;
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = source.accept()?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            conn.write_all(&chunk[..n])?;
            left -= n;
        }
        Ok(())
    });
    let relay = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut to_reader, _) = front.accept()?;
        let mut from_source = TcpStream::connect(source_addr)?;
        let mut buf = vec![0u8; size];
        loop {
            let n = from_source.read(&mut buf)?;
            if n == 0 {
                return to_reader.shutdown(Shutdown::Write);
            }
            to_reader.write_all(&buf[..n])?;
        }
    });
    let started = Instant::now();
    let mut reader = TcpStream::connect(front_addr)?;
    let got = super::count_to_eof(&mut reader, 1 << 20)?;
    let secs = started.elapsed().as_secs_f64();
    feeder.join().expect("feeder")?;
    relay.join().expect("relay")?;
    assert_eq!(got, total);
    Ok(total as f64 / MIB / secs)
}
