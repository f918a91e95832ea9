//! The tar format, as much as directory transfers need: a writer of POSIX ustar with PAX
//! records for long names and large sizes, and a reader of ustar, PAX and GNU long names
//! (what GNU tar and busybox write by default). Streaming both ways: one entry's header and
//! then its data, never a whole archive in memory.

use std::io::{self, Read, Write};

pub(crate) const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink(String),
    /// A hard link to an earlier entry of the archive.
    HardLink(String),
    /// Anything else (devices, fifos): its data, if any, is skipped.
    Other,
}

/// One entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) path: String,
    pub(crate) kind: EntryKind,
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) mtime: u64,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes `value` as zero-padded octal filling `field` but its last byte (a NUL); `false` if it
/// does not fit.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

/// One PAX record, `"<len> <key>=<value>\n"`, whose length counts itself.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    // The length's own digits count: grow the guess until it describes itself.
    let mut len = body.len();
    while format!("{len}").len() + body.len() != len {
        len = format!("{len}").len() + body.len();
    }
    format!("{len}{body}")
}

/// Writes archives to `out`.
pub(crate) struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(out: W) -> Writer<W> {
        Writer { out }
    }

    /// Writes a header (and the PAX header it needs, if any). The caller then writes exactly
    /// `size` bytes of data for a file, followed by [`pad`](Self::pad).
    pub(crate) fn header(&mut self, header: &Header) -> io::Result<()> {
        let (typeflag, link) = match &header.kind {
            EntryKind::File => (b'0', ""),
            EntryKind::Dir => (b'5', ""),
            EntryKind::Symlink(target) => (b'2', target.as_str()),
            EntryKind::HardLink(target) => (b'1', target.as_str()),
            EntryKind::Other => return Err(invalid("only files, directories and links")),
        };
        let mut path = header.path.clone();
        if header.kind == EntryKind::Dir && !path.ends_with('/') {
            path.push('/');
        }
        let mut block = [0u8; BLOCK];
        let mut pax = String::new();
        if path.len() > 100 {
            pax.push_str(&pax_record("path", &path));
        }
        if link.len() > 100 {
            pax.push_str(&pax_record("linkpath", link));
        }
        if !put_octal(&mut block[124..136], header.size) {
            pax.push_str(&pax_record("size", &header.size.to_string()));
        }
        if !pax.is_empty() {
            self.raw_header("././@PaxHeader", b'x', pax.len() as u64, "", 0o644, 0)?;
            self.out.write_all(pax.as_bytes())?;
            self.pad(pax.len() as u64)?;
        }
        self.raw_header(
            truncate_utf8(&path, 100),
            typeflag,
            if header.kind == EntryKind::File {
                header.size
            } else {
                0
            },
            truncate_utf8(link, 100),
            header.mode,
            header.mtime,
        )
    }

    fn raw_header(
        &mut self,
        name: &str,
        typeflag: u8,
        size: u64,
        link: &str,
        mode: u32,
        mtime: u64,
    ) -> io::Result<()> {
        let mut block = [0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut block[100..108], u64::from(mode & 0o7777));
        put_octal(&mut block[108..116], 0);
        put_octal(&mut block[116..124], 0);
        // A size that does not fit in octal went into a PAX record; the field says 0.
        if !put_octal(&mut block[124..136], size) {
            put_octal(&mut block[124..136], 0);
        }
        put_octal(&mut block[136..148], mtime.min(0o77777777777));
        block[156] = typeflag;
        block[157..157 + link.len()].copy_from_slice(link.as_bytes());
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        put_octal(&mut block[148..155], u64::from(sum));
        block[155] = b' ';
        self.out.write_all(&block)
    }

    /// Writes the data of a file (any number of calls, `size` bytes in all).
    pub(crate) fn data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    /// Pads `size` bytes of data to a whole block.
    pub(crate) fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (size % BLOCK as u64) as usize;
        if rest != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rest])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// `text` cut to at most `max` bytes on a character boundary (the full name is in a PAX record).
fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads archives from `input`.
pub(crate) struct Reader<R: Read> {
    input: R,
    /// Data bytes (and padding) of the current entry not read yet.
    remaining: u64,
    padding: u64,
}

impl<R: Read> Reader<R> {
    pub(crate) fn new(input: R) -> Reader<R> {
        Reader {
            input,
            remaining: 0,
            padding: 0,
        }
    }

    /// The next entry's header, skipping whatever of the previous entry's data was not read;
    /// `None` at the end of the archive.
    pub(crate) fn next_header(&mut self) -> io::Result<Option<Header>> {
        self.skip_rest()?;
        let mut long_path: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let mut block = [0u8; BLOCK];
            if !self.read_block(&mut block)? {
                return Ok(None); // no end marker: a truncated but well-formed archive
            }
            if block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_sum(&block)?;
            let typeflag = block[156];
            let size = parse_number(&block[124..136])?;
            match typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    // Metadata for the next entry: small, read whole (bounded).
                    if size > 1 << 20 {
                        return Err(invalid("an extended header larger than 1 MiB"));
                    }
                    let data = self.read_data(size)?;
                    match typeflag {
                        b'x' => {
                            for (key, value) in parse_pax(&data)? {
                                match key.as_str() {
                                    "path" => long_path = Some(value),
                                    "linkpath" => long_link = Some(value),
                                    "size" => {
                                        pax_size = Some(value.parse().map_err(|_| {
                                            invalid("a PAX size that is not a number")
                                        })?)
                                    }
                                    _ => {}
                                }
                            }
                        }
                        b'L' => long_path = Some(c_string(&data)?),
                        b'K' => long_link = Some(c_string(&data)?),
                        _ => {} // global PAX headers carry nothing we use
                    }
                }
                _ => {
                    let name = match long_path.take() {
                        Some(path) => path,
                        None => {
                            let name = c_string(&block[0..100])?;
                            let prefix = c_string(&block[345..500])?;
                            if &block[257..262] == b"ustar" && !prefix.is_empty() {
                                format!("{prefix}/{name}")
                            } else {
                                name
                            }
                        }
                    };
                    let link = match long_link.take() {
                        Some(link) => link,
                        None => c_string(&block[157..257])?,
                    };
                    let size = pax_size.take().unwrap_or(size);
                    let kind = match typeflag {
                        b'0' | b'\0' | b'7' => EntryKind::File,
                        b'5' => EntryKind::Dir,
                        b'2' => EntryKind::Symlink(link),
                        b'1' => EntryKind::HardLink(link),
                        _ => EntryKind::Other,
                    };
                    // Only regular files carry data worth reading; others' is skipped.
                    self.remaining = size;
                    self.padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
                    return Ok(Some(Header {
                        path: name,
                        kind,
                        mode: parse_number(&block[100..108])? as u32,
                        size,
                        mtime: parse_number(&block[136..148])?,
                    }));
                }
            }
        }
    }

    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            match self.input.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => return Err(invalid("the archive ends inside a header")),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads a whole (small) data section and its padding.
    fn read_data(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        self.input.read_exact(&mut data).map_err(truncated)?;
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        io::copy(&mut (&mut self.input).take(padding), &mut io::sink())?;
        Ok(data)
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let skip = self.remaining + self.padding;
        let skipped = io::copy(&mut (&mut self.input).take(skip), &mut io::sink())?;
        self.remaining = 0;
        self.padding = 0;
        if skipped < skip {
            return Err(invalid("the archive ends inside an entry"));
        }
        Ok(())
    }
}

/// The current entry's data.
impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.input.read(&mut buf[..max])?;
        if n == 0 {
            return Err(invalid("the archive ends inside an entry"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn truncated(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        invalid("the archive ends inside an entry")
    } else {
        err
    }
}

fn check_sum(block: &[u8; BLOCK]) -> io::Result<()> {
    let stored = parse_number(&block[148..156])?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
        .sum();
    if stored != computed {
        return Err(invalid(
            "a tar header's checksum does not match: not a tar archive",
        ));
    }
    Ok(())
}

/// An octal field (NUL- or space-terminated), or GNU's base-256 for large values.
fn parse_number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| invalid("a tar number larger than 64 bits"))?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| invalid("a tar number is not octal"))?;
    u64::from_str_radix(text, 8).map_err(|_| invalid(format!("{text:?} is not an octal number")))
}

fn c_string(field: &[u8]) -> io::Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec())
        .map_err(|_| invalid("a name in the archive is not UTF-8"))
}

/// PAX records: `"<len> <key>=<value>\n"`, one after another.
fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| invalid("a PAX record without a length"))?;
        let (len, record) = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .and_then(|l| Some((l, data.get(space + 1..l)?)))
            .ok_or_else(|| invalid("a PAX record with a bad length"))?;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| invalid("a PAX record without '='"))?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        let value = String::from_utf8(record[eq + 1..].to_vec())
            .map_err(|_| invalid("a PAX value is not UTF-8"))?;
        records.push((key, value));
        data = &data[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64) -> Header {
        Header {
            path: path.into(),
            kind,
            mode: 0o644,
            size,
            mtime: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips_files_dirs_links_and_long_names() {
        let long = format!("{}/file-with-a-long-name.txt", "d".repeat(150));
        let long_target = "t".repeat(120);
        let mut writer = Writer::new(Vec::new());
        writer.header(&entry("dir", EntryKind::Dir, 0)).unwrap();
        writer
            .header(&entry("dir/a.txt", EntryKind::File, 5))
            .unwrap();
        writer.data(b"hello").unwrap();
        writer.pad(5).unwrap();
        writer.header(&entry(&long, EntryKind::File, 0)).unwrap();
        writer
            .header(&entry("link", EntryKind::Symlink(long_target.clone()), 0))
            .unwrap();
        writer
            .header(&entry("ünï", EntryKind::HardLink("dir/a.txt".into()), 0))
            .unwrap();
        let archive = writer.finish().unwrap();
        assert_eq!(archive.len() % BLOCK, 0);

        let mut reader = Reader::new(&archive[..]);
        let dir = reader.next_header().unwrap().unwrap();
        assert_eq!((dir.path.as_str(), &dir.kind), ("dir/", &EntryKind::Dir));
        let file = reader.next_header().unwrap().unwrap();
        assert_eq!(
            (file.path.as_str(), file.size, file.mode),
            ("dir/a.txt", 5, 0o644)
        );
        assert_eq!(file.mtime, 1_700_000_000);
        let mut data = String::new();
        reader.read_to_string(&mut data).unwrap();
        assert_eq!(data, "hello");
        let named = reader.next_header().unwrap().unwrap();
        assert_eq!(named.path, long);
        let link = reader.next_header().unwrap().unwrap();
        assert_eq!(link.kind, EntryKind::Symlink(long_target));
        let hard = reader.next_header().unwrap().unwrap();
        assert_eq!(
            (hard.path.as_str(), hard.kind),
            ("ünï", EntryKind::HardLink("dir/a.txt".into()))
        );
        assert_eq!(reader.next_header().unwrap(), None);
    }

    #[test]
    fn unread_data_is_skipped_and_huge_sizes_use_pax() {
        let mut writer = Writer::new(Vec::new());
        writer.header(&entry("a", EntryKind::File, 600)).unwrap();
        writer.data(&[7u8; 600]).unwrap();
        writer.pad(600).unwrap();
        writer.header(&entry("b", EntryKind::File, 1)).unwrap();
        writer.data(b"z").unwrap();
        writer.pad(1).unwrap();
        let archive = writer.finish().unwrap();
        let mut reader = Reader::new(&archive[..]);
        assert_eq!(reader.next_header().unwrap().unwrap().path, "a");
        let b = reader.next_header().unwrap().unwrap();
        assert_eq!(b.path, "b");
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"z");

        // 10 GiB does not fit the octal field: a PAX record carries it.
        let mut writer = Writer::new(Vec::new());
        writer
            .header(&entry("big", EntryKind::File, 10 << 30))
            .unwrap();
        let head = writer.out.clone();
        let mut reader = Reader::new(&head[..]);
        assert_eq!(reader.next_header().unwrap().unwrap().size, 10 << 30);
    }

    #[test]
    fn gnu_long_names_and_base256_numbers() {
        let mut long = [0u8; BLOCK];
        let name = "x".repeat(130);
        let mut out = Vec::new();
        {
            let mut writer = Writer::new(&mut out);
            writer
                .raw_header("././@LongLink", b'L', name.len() as u64 + 1, "", 0, 0)
                .unwrap();
        }
        long[..name.len()].copy_from_slice(name.as_bytes());
        out.extend_from_slice(&long);
        let mut writer = Writer::new(&mut out);
        writer
            .raw_header("truncated", b'0', 0, "", 0o600, 0)
            .unwrap();
        let archive = writer.finish().unwrap().clone();
        let mut reader = Reader::new(&archive[..]);
        let header = reader.next_header().unwrap().unwrap();
        assert_eq!((header.path, header.mode), (name, 0o600));

        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 0x2a;
        field[10] = 0x01;
        assert_eq!(parse_number(&field).unwrap(), 256 + 42);
        assert_eq!(parse_number(b"0000644 \0").unwrap(), 0o644);
        assert_eq!(parse_number(b"\0\0\0").unwrap(), 0);
        assert!(parse_number(b"12389\0").is_err());
    }

    #[test]
    fn corrupt_and_truncated_archives_are_invalid_data() {
        let mut writer = Writer::new(Vec::new());
        writer.header(&entry("a", EntryKind::File, 1000)).unwrap();
        writer.data(&[1u8; 1000]).unwrap();
        writer.pad(1000).unwrap();
        let archive = writer.finish().unwrap();

        let mut corrupt = archive.clone();
        corrupt[10] ^= 1;
        let err = Reader::new(&corrupt[..]).next_header().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let cut = &archive[..BLOCK + 100];
        let mut reader = Reader::new(cut);
        reader.next_header().unwrap().unwrap();
        let err = io::copy(&mut reader, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut reader = Reader::new(cut);
        reader.next_header().unwrap().unwrap();
        assert_eq!(
            reader.next_header().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );

        let err = Reader::new(&archive[..100]).next_header().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(Reader::new(&[][..]).next_header().unwrap(), None);
    }

    fn one_entry(header: &Header) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new());
        writer.header(header).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn names_up_to_100_bytes_need_no_pax_record() {
        let exact = one_entry(&entry(&"n".repeat(100), EntryKind::File, 0));
        assert_eq!(exact.len(), 3 * BLOCK, "one header and the end marker");
        let link = one_entry(&entry("l", EntryKind::Symlink("t".repeat(100)), 0));
        assert_eq!(link.len(), 3 * BLOCK);
        let longer = one_entry(&entry(&"n".repeat(101), EntryKind::File, 0));
        assert_eq!(
            longer.len(),
            5 * BLOCK,
            "PAX header, its data, the header, the end"
        );
        let longer_link = one_entry(&entry("l", EntryKind::Symlink("t".repeat(101)), 0));
        assert_eq!(longer_link.len(), 5 * BLOCK);
        assert_eq!(
            Writer::new(Vec::new()).finish().unwrap(),
            vec![0u8; 2 * BLOCK]
        );
    }

    #[test]
    fn long_multibyte_names_and_big_extended_headers() {
        // A name whose 100th byte falls inside a character, and one whose PAX data spans
        // more than a block.
        for name in [
            format!("{}é-tail", "a".repeat(99)),
            format!("{}/f", "d".repeat(600)),
        ] {
            let mut writer = Writer::new(Vec::new());
            writer.header(&entry(&name, EntryKind::File, 3)).unwrap();
            writer.data(b"abc").unwrap();
            writer.pad(3).unwrap();
            writer.header(&entry("after", EntryKind::Dir, 0)).unwrap();
            let archive = writer.finish().unwrap();
            let mut reader = Reader::new(&archive[..]);
            let first = reader.next_header().unwrap().unwrap();
            assert_eq!(first.path, name);
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            assert_eq!(data, b"abc");
            assert_eq!(reader.next_header().unwrap().unwrap().path, "after/");
        }
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aé", 3), "aé");
        assert_eq!(truncate_utf8("ab", 5), "ab");
    }

    #[test]
    fn extended_headers_are_bounded_and_gnu_long_links_read() {
        // Extended headers up to 1 MiB are read; a larger one is refused whole, even valid.
        for (size, ok) in [(1usize << 20, true), ((1 << 20) + 1, false)] {
            // "<7 digits> comment=<value>\n": 17 bytes besides the value.
            let record = pax_record("comment", &"c".repeat(size - 17));
            assert_eq!(record.len(), size);
            let mut out = Vec::new();
            let mut writer = Writer::new(&mut out);
            writer.raw_header("x", b'x', size as u64, "", 0, 0).unwrap();
            writer.data(record.as_bytes()).unwrap();
            writer.pad(size as u64).unwrap();
            writer.raw_header("after", b'5', 0, "", 0o755, 0).unwrap();
            match (Reader::new(&out[..]).next_header(), ok) {
                (Ok(Some(header)), true) => assert_eq!(header.path, "after"),
                (Err(e), false) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
                (other, _) => panic!("{size}: {other:?}"),
            }
        }

        let target = "t".repeat(150);
        let mut out = Vec::new();
        Writer::new(&mut out)
            .raw_header("././@LongLink", b'K', target.len() as u64, "", 0, 0)
            .unwrap();
        let mut data = target.clone().into_bytes();
        data.resize(BLOCK, 0);
        out.extend_from_slice(&data);
        Writer::new(&mut out)
            .raw_header("link", b'2', 0, "short", 0o777, 0)
            .unwrap();
        let header = Reader::new(&out[..]).next_header().unwrap().unwrap();
        assert_eq!(header.kind, EntryKind::Symlink(target));

        // An archive cut inside an extended header's data is invalid, not an EOF.
        let mut cut = Vec::new();
        Writer::new(&mut cut)
            .raw_header("x", b'x', 300, "", 0, 0)
            .unwrap();
        cut.extend_from_slice(b"30 path=");
        let err = Reader::new(&cut[..]).next_header().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn ustar_prefixes_join_their_names() {
        let mut out = Vec::new();
        Writer::new(&mut out)
            .raw_header("file", b'0', 0, "", 0o644, 0)
            .unwrap();
        out[345..348].copy_from_slice(b"dir");
        // Fix the checksum for the edited header.
        out[148..156].fill(b' ');
        let sum: u32 = out[..BLOCK].iter().map(|&b| u32::from(b)).sum();
        put_octal(&mut out[148..155], u64::from(sum));
        let header = Reader::new(&out[..]).next_header().unwrap().unwrap();
        assert_eq!(header.path, "dir/file");
        // Without the ustar magic the prefix field is not a prefix.
        out[257..263].fill(0);
        out[148..156].fill(b' ');
        let sum: u32 = out[..BLOCK].iter().map(|&b| u32::from(b)).sum();
        put_octal(&mut out[148..155], u64::from(sum));
        assert_eq!(
            Reader::new(&out[..]).next_header().unwrap().unwrap().path,
            "file"
        );
    }

    #[test]
    fn interrupted_reads_are_retried() {
        struct Flaky<'a>(&'a [u8], bool);
        impl Read for Flaky<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = buf.len().min(self.0.len()).min(100);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let archive = one_entry(&entry("a", EntryKind::Dir, 0));
        let mut reader = Reader::new(Flaky(&archive, false));
        assert_eq!(reader.next_header().unwrap().unwrap().path, "a/");
        assert_eq!(reader.next_header().unwrap(), None);
        // Other errors are not retried.
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        let err = Reader::new(Broken).next_header().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn pax_records_measure_themselves() {
        for value in ["a", &"b".repeat(95), &"c".repeat(996)] {
            let record = pax_record("path", value);
            let (len, _) = record.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{value}");
            assert_eq!(
                parse_pax(record.as_bytes()).unwrap(),
                [("path".to_owned(), value.to_owned())]
            );
        }
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"garbage").is_err());
        assert!(
            parse_pax(b"1 x").is_err(),
            "a length shorter than its own digits"
        );
        assert!(parse_pax(b"5 a=b\n").is_err(), "one byte short");
        assert_eq!(
            parse_pax(b"6 a=b\n").unwrap(),
            [("a".to_owned(), "b".to_owned())]
        );
    }
}
