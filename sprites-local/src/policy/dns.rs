//! Just enough of DNS (RFC 1035, EDNS from RFC 6891) for a filtering forwarder: parse a
//! query's question, answer it with an error code, build the query we send upstream, and
//! read the addresses out of the upstream's answer.
//!
//! Every parser here takes bytes from a sprite or from the network: it bounds every loop
//! (name labels, compression pointers, record counts by the packet's length) and returns
//! [`DnsError`] instead of panicking on anything malformed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest DNS message over UDP we handle (EDNS sizes above this are clamped).
pub(crate) const MAX_UDP: usize = 4096;
/// The payload size we advertise upstream with EDNS (the DNS flag day 2020 value).
pub(crate) const EDNS_SIZE: u16 = 1232;
/// Size of the fixed header.
const HEADER: usize = 12;
/// Most compression pointers followed while reading one name (RFC 1035 names have at most
/// 127 labels; a loop of pointers ends here).
const MAX_POINTERS: usize = 64;

/// Record types we look at.
pub(crate) const TYPE_A: u16 = 1;
/// AAAA.
pub(crate) const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;

/// Response codes we send.
pub(crate) const FORMERR: u8 = 1;
/// The upstream failed.
pub(crate) const SERVFAIL: u8 = 2;
/// Not implemented (an opcode other than QUERY).
pub(crate) const NOTIMP: u8 = 4;
/// The policy denies the name.
pub(crate) const REFUSED: u8 = 5;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DnsError {
    /// Shorter than its own contents say.
    Truncated,
    /// Something in it is not valid DNS (the text says what).
    Malformed(&'static str),
}

/// The question of a query, and what we need to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    /// The client's message id.
    pub id: u16,
    /// The client's flags (we echo RD and the opcode).
    pub flags: u16,
    /// The name asked about, lowercase, dotted, no trailing dot (`""` = the root).
    pub name: String,
    /// Its wire form (labels as sent), echoed in answers.
    pub question: Vec<u8>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The client's EDNS payload size, if it sent an OPT record.
    pub edns: Option<u16>,
}

impl Query {
    /// The opcode (0 = a standard query).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    /// The largest answer the client accepts over UDP.
    pub fn max_udp(&self) -> usize {
        match self.edns {
            Some(n) => usize::from(n).clamp(512, MAX_UDP),
            None => 512,
        }
    }
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, DnsError> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(DnsError::Truncated),
    }
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, DnsError> {
    match buf.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(DnsError::Truncated),
    }
}

/// Reads the (possibly compressed) name at `at`: its text and the offset just after it in
/// the message (after the first pointer, if it has one).
pub(crate) fn read_name(buf: &[u8], at: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut pos = at;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *buf.get(pos).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let end = end.unwrap_or(pos + 1);
                return Ok((name, end));
            }
            0x00 => {
                let label = buf
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated)?;
                if name.len() + label.len() + 1 > 254 {
                    return Err(DnsError::Malformed("name longer than 255 bytes"));
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    // Anything outside printable ASCII (and the dot itself, which would
                    // change the name's meaning) is kept escaped: it can never match a rule.
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        name.push(b.to_ascii_lowercase() as char);
                    } else {
                        name.push_str(&format!("\\{b:03}"));
                    }
                }
                pos += 1 + usize::from(len);
            }
            0xc0 => {
                let lo = *buf.get(pos + 1).ok_or(DnsError::Truncated)?;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(DnsError::Malformed("compression pointer loop"));
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                let target = (usize::from(len & 0x3f) << 8) | usize::from(lo);
                if target >= pos {
                    // Pointers point back (RFC 1035 §4.1.4); forward ones make loops easy.
                    return Err(DnsError::Malformed("compression pointer points forward"));
                }
                pos = target;
            }
            _ => return Err(DnsError::Malformed("reserved label type")),
        }
    }
}

/// Skips a resource record at `at`; returns (type, class, ttl, rdata range, next offset).
fn read_record(
    buf: &[u8],
    at: usize,
) -> Result<(u16, u16, u32, std::ops::Range<usize>, usize), DnsError> {
    let (_, pos) = read_name(buf, at)?;
    let rtype = u16_at(buf, pos)?;
    let class = u16_at(buf, pos + 2)?;
    let ttl = u32_at(buf, pos + 4)?;
    let len = usize::from(u16_at(buf, pos + 8)?);
    let start = pos + 10;
    if buf.len() < start + len {
        return Err(DnsError::Truncated);
    }
    Ok((rtype, class, ttl, start..start + len, start + len))
}

/// Parses a query from a client: a message with QR = 0 and exactly one question.
pub(crate) fn parse_query(buf: &[u8]) -> Result<Query, DnsError> {
    if buf.len() < HEADER {
        return Err(DnsError::Truncated);
    }
    let id = u16_at(buf, 0)?;
    let flags = u16_at(buf, 2)?;
    if flags & 0x8000 != 0 {
        return Err(DnsError::Malformed("a response, not a query"));
    }
    let qd = u16_at(buf, 4)?;
    let an = u16_at(buf, 6)?;
    let ns = u16_at(buf, 8)?;
    let ar = u16_at(buf, 10)?;
    if qd != 1 {
        return Err(DnsError::Malformed(
            "a query must have exactly one question",
        ));
    }
    let (name, pos) = read_name(buf, HEADER)?;
    let qtype = u16_at(buf, pos)?;
    let qclass = u16_at(buf, pos + 2)?;
    let question = buf[HEADER..pos].to_vec();
    let mut at = pos + 4;
    // Records after the question: skipped, except an OPT in the additional section.
    let mut edns = None;
    let records = usize::from(an) + usize::from(ns) + usize::from(ar);
    for i in 0..records {
        let (rtype, class, _, _, next) = read_record(buf, at)?;
        if rtype == TYPE_OPT && i >= usize::from(an) + usize::from(ns) {
            edns = Some(class);
        }
        at = next;
    }
    Ok(Query {
        id,
        flags,
        name,
        question,
        qtype,
        qclass,
        edns,
    })
}

/// A header for an answer to `q` with response code `rcode` and the given counts.
fn answer_header(q: &Query, rcode: u8, counts: [u16; 4]) -> Vec<u8> {
    // QR, the client's opcode and RD, RA (we recurse through the upstream), rcode.
    let flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | u16::from(rcode & 0xf);
    let mut out = Vec::with_capacity(HEADER + q.question.len() + 4);
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out
}

/// An answer to `q` carrying only its question and `rcode` (REFUSED, SERVFAIL, ...).
pub(crate) fn error_answer(q: &Query, rcode: u8) -> Vec<u8> {
    let mut out = answer_header(q, rcode, [1, 0, 0, 0]);
    out.extend_from_slice(&q.question);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    out
}

/// FORMERR for bytes that did not parse as a query, if they are long enough to carry an id
/// (else nothing: there is nobody to answer).
pub(crate) fn format_error(buf: &[u8]) -> Option<Vec<u8>> {
    if buf.len() < HEADER || buf[2] & 0x80 != 0 {
        return None; // too short, or a response (answering those makes loops)
    }
    let mut out = buf[..4].to_vec();
    out[2] = 0x80 | (buf[2] & 0x79);
    out[3] = 0x80 | FORMERR;
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// The query we send upstream for `q`: our own `id`, recursion desired, the same question,
/// and an OPT record when the client sent one (so big answers come over UDP only to a
/// client that can take them). Nothing else the client sent is passed on.
pub(crate) fn upstream_query(q: &Query, id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + q.question.len() + 15);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    let ar: u16 = q.edns.is_some().into();
    for c in [1u16, 0, 0, ar] {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&q.question);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    if let Some(size) = q.edns {
        let size = size.clamp(512, EDNS_SIZE);
        out.push(0); // root name
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // ttl (flags), rdlength
    }
    out
}

/// What an upstream answered, as far as we look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Its id.
    pub id: u16,
    /// The response code.
    pub rcode: u8,
    /// TC: the answer did not fit (ask again over TCP).
    pub truncated: bool,
    /// The question it answers (lowercase name, type, class).
    pub question: (String, u16, u16),
    /// A and AAAA records of the answer section, with their TTLs.
    pub addresses: Vec<(IpAddr, u32)>,
}

/// Parses an upstream's answer (QR = 1, one question).
pub(crate) fn parse_answer(buf: &[u8]) -> Result<Answer, DnsError> {
    if buf.len() < HEADER {
        return Err(DnsError::Truncated);
    }
    let id = u16_at(buf, 0)?;
    let flags = u16_at(buf, 2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("a query, not a response"));
    }
    if u16_at(buf, 4)? != 1 {
        return Err(DnsError::Malformed(
            "an answer must repeat exactly one question",
        ));
    }
    let an = u16_at(buf, 6)?;
    let (name, pos) = read_name(buf, HEADER)?;
    let qtype = u16_at(buf, pos)?;
    let qclass = u16_at(buf, pos + 2)?;
    let mut at = pos + 4;
    let mut addresses = Vec::new();
    for _ in 0..an {
        let (rtype, class, ttl, data, next) = read_record(buf, at)?;
        let rdata = &buf[data];
        match (rtype, class, rdata.len()) {
            (TYPE_A, 1, 4) => {
                let ip = Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]);
                addresses.push((IpAddr::V4(ip), ttl));
            }
            (TYPE_AAAA, 1, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                addresses.push((IpAddr::V6(Ipv6Addr::from(b)), ttl));
            }
            _ => {}
        }
        at = next;
    }
    Ok(Answer {
        id,
        rcode: (flags & 0xf) as u8,
        truncated: flags & 0x0200 != 0,
        question: (name, qtype, qclass),
        addresses,
    })
}

/// `answer` with its id replaced (the upstream answered our id; the client wants its own).
pub(crate) fn with_id(mut answer: Vec<u8>, id: u16) -> Vec<u8> {
    if answer.len() >= 2 {
        answer[..2].copy_from_slice(&id.to_be_bytes());
    }
    answer
}

/// `answer` cut down to its header and question with TC set, for a client whose buffer is
/// smaller than the answer (it retries over TCP).
pub(crate) fn truncated(q: &Query) -> Vec<u8> {
    let mut out = error_answer(q, 0);
    out[2] |= 0x02; // TC
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` of `qtype`, as a stub resolver sends it.
    pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        if edns {
            out.extend_from_slice(&[0, 0, 41, 0x04, 0xb0, 0, 0, 0, 0, 0, 0]);
        }
        out
    }

    /// An answer to `q` with A records (compressed names pointing at the question).
    pub(crate) fn answer(q: &[u8], addrs: &[Ipv4Addr]) -> Vec<u8> {
        let parsed = parse_query(q).unwrap();
        let mut out = q[..HEADER].to_vec();
        out[2] = 0x81;
        out[3] = 0x80;
        out[6..8].copy_from_slice(&(addrs.len() as u16).to_be_bytes());
        out[10..12].copy_from_slice(&[0, 0]);
        out.extend_from_slice(&parsed.question);
        out.extend_from_slice(&parsed.qtype.to_be_bytes());
        out.extend_from_slice(&parsed.qclass.to_be_bytes());
        for a in addrs {
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            out.extend_from_slice(&a.octets());
        }
        out
    }

    #[test]
    fn a_query_round_trips_into_answers() {
        let q = query(0x1234, "Allowed.Example", TYPE_A, true);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.name, "allowed.example");
        assert_eq!(
            (p.id, p.qtype, p.qclass, p.edns),
            (0x1234, 1, 1, Some(1200))
        );
        assert_eq!(p.max_udp(), 1200);
        let refused = error_answer(&p, REFUSED);
        let back = parse_answer(&refused).unwrap();
        assert_eq!(back.id, 0x1234);
        assert_eq!(back.rcode, REFUSED);
        assert_eq!(back.question, ("allowed.example".into(), 1, 1));
        assert_eq!(refused[2] & 0x01, 0x01, "RD echoed");
        let up = upstream_query(&p, 7);
        let upq = parse_query(&up).unwrap();
        assert_eq!(
            (upq.id, upq.name.as_str(), upq.edns),
            (7, "allowed.example", Some(1200))
        );
        let ans = answer(
            &up,
            &[Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
        );
        let a = parse_answer(&ans).unwrap();
        assert_eq!(a.addresses.len(), 2);
        assert_eq!(
            a.addresses[0],
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 60)
        );
        assert_eq!(parse_answer(&with_id(ans, 9)).unwrap().id, 9);
        let tc = truncated(&p);
        assert_eq!(tc[2] & 0x02, 0x02);
        assert!(parse_answer(&tc).unwrap().truncated);
        assert!(!a.truncated);
        assert_eq!(
            parse_query(&query(1, "x", 1, false)).unwrap().max_udp(),
            512
        );
    }

    #[test]
    fn odd_labels_are_escaped_not_matched() {
        let mut q = query(1, "a.example", TYPE_A, false);
        q[13] = b'.'; // the label "a" becomes "."
        assert_eq!(parse_query(&q).unwrap().name, "\\046.example");
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse_query(&[0; 5]), Err(DnsError::Truncated));
        let good = query(1, "a.example", TYPE_A, true);
        for cut in 0..good.len() {
            assert!(parse_query(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A pointer to itself, a forward pointer, a reserved label type.
        let mut looped = good[..HEADER].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_query(&looped).is_err());
        let mut fwd = good[..HEADER].to_vec();
        fwd.extend_from_slice(&[0xc0, 40, 0, 1, 0, 1]);
        assert!(parse_query(&fwd).is_err());
        let mut reserved = good[..HEADER].to_vec();
        reserved.extend_from_slice(&[0x40, 0, 0, 1, 0, 1]);
        assert!(parse_query(&reserved).is_err());
        let mut two = good.clone();
        two[5] = 2;
        assert!(parse_query(&two).is_err());
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert!(parse_query(&resp).is_err());
        assert!(format_error(&resp).is_none(), "never answer a response");
        assert_eq!(format_error(&good).unwrap()[3] & 0xf, FORMERR);
        // A name of more than 255 bytes.
        let long = format!("{}.example", vec!["a".repeat(63); 4].join("."));
        assert!(parse_query(&query(1, &long, 1, false)).is_err());
    }

    /// A little xorshift generator: deterministic "random" packets without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_and_mutated_packets_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            query(3, "www.example.com", TYPE_AAAA, true),
            answer(
                &query(3, "www.example.com", TYPE_A, false),
                &[Ipv4Addr::LOCALHOST; 3],
            ),
        ];
        for round in 0..20_000 {
            let mut pkt = if round % 2 == 0 {
                let len = (rng.next() % 80) as usize;
                (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            } else {
                let mut p = seeds[round % 4 / 2].clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % p.len();
                    p[i] = rng.next() as u8;
                }
                p
            };
            if round % 7 == 0 {
                let keep = (rng.next() as usize) % (pkt.len() + 1);
                pkt.truncate(keep);
            }
            if let Ok(q) = parse_query(&pkt) {
                let _ = error_answer(&q, REFUSED);
                let _ = upstream_query(&q, 1);
            }
            let _ = parse_answer(&pkt);
            let _ = format_error(&pkt);
        }
    }
}
