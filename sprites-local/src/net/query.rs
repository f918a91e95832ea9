//! URL query strings and percent-decoding.

/// A decoded query string: ordered `(key, value)` pairs, keys may repeat (`cmd=a&cmd=b`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

/// Why a query string or path segment could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl Query {
    /// Parses `a=1&b=x+y&b=%2F` (the part after `?`). `+` means space, `%XX` a byte; the
    /// decoded bytes must be UTF-8. A key without `=` has an empty value; empty pieces
    /// (`a=1&&b=2`) are skipped.
    pub fn parse(raw: &str) -> Result<Query, DecodeError> {
        let mut pairs = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((decode(k, true)?, decode(v, true)?));
        }
        Ok(Query { pairs })
    }

    /// A query made of already-decoded pairs (a control connection's `args` object).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Query {
        Query { pairs }
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value for `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a boolean parameter: absent → `default`; `true/1/yes/on` and `false/0/no/off`
    /// (any case; an empty value counts as true, like a bare `?stdin`).
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, DecodeError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bool(v)
                .ok_or_else(|| DecodeError(format!("{key} must be true or false, got {v:?}"))),
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Percent-decodes `s`. With `plus_is_space` (query strings) `+` becomes a space; in paths
/// it stays a literal `+`.
pub fn decode(s: &str, plus_is_space: bool) -> Result<String, DecodeError> {
    if !s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+')) {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_val(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_val(*b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(DecodeError(format!("invalid percent-encoding in {s:?}"))),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError(format!("{s:?} does not decode to UTF-8")))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_keep_order() {
        let q = Query::parse("cmd=sh&cmd=-c&cmd=echo+hi&path=sh&env=FOO%3Dbar&dir=%2Ftmp").unwrap();
        assert_eq!(
            q.get_all("cmd").collect::<Vec<_>>(),
            ["sh", "-c", "echo hi"]
        );
        assert_eq!(q.get("env"), Some("FOO=bar"));
        assert_eq!(q.get("dir"), Some("/tmp"));
        assert_eq!(q.get("nope"), None);
    }

    #[test]
    fn plus_and_percent() {
        assert_eq!(decode("a+b%2Bc", true).unwrap(), "a b+c");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert_eq!(decode("%E2%9C%93", true).unwrap(), "✓");
        assert_eq!(decode("%e2%9c%93", true).unwrap(), "✓");
        assert_eq!(decode("plain", true).unwrap(), "plain");
    }

    #[test]
    fn malformed_percent_is_an_error() {
        assert!(decode("%", true).is_err());
        assert!(decode("%4", true).is_err());
        assert!(decode("%zz", true).is_err());
        assert!(decode("%FF", true).is_err(), "lone 0xFF is not UTF-8");
        assert!(Query::parse("a=%G0").is_err());
    }

    #[test]
    fn empty_pieces_and_bare_keys() {
        let q = Query::parse("&a=1&&stdin&b=").unwrap();
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("stdin"), Some(""));
        assert_eq!(q.get("b"), Some(""));
        assert!(q.get_bool("stdin", false).unwrap());
        assert!(!Query::parse("").unwrap().get_bool("x", false).unwrap());
        assert!(Query::parse("x=maybe")
            .unwrap()
            .get_bool("x", false)
            .is_err());
        assert!(!Query::parse("x=FALSE")
            .unwrap()
            .get_bool("x", true)
            .unwrap());
    }
}
