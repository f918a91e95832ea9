//! Bearer-token authentication.

/// True if the `Authorization` header value is `Bearer <token>` for exactly `token`.
///
/// The scheme is case-insensitive (RFC 7235). The token comparison takes the same time
/// wherever the first difference is, so response timing does not leak a prefix of it.
pub fn is_authorized(header: Option<&str>, token: &str) -> bool {
    let Some(value) = header else { return false };
    let value = value.trim();
    let Some((scheme, presented)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Fold the length difference in and walk the longer input fully, so an attacker
    // learns nothing from timing beyond the (public) lengths.
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    // black_box keeps the optimiser from turning the loop into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_token() {
        assert!(is_authorized(Some("Bearer abc"), "abc"));
        assert!(is_authorized(Some("bearer abc"), "abc"));
        assert!(is_authorized(Some("  Bearer   abc "), "abc"));
        assert!(!is_authorized(Some("Bearer abcd"), "abc"));
        assert!(!is_authorized(Some("Bearer ab"), "abc"));
        assert!(!is_authorized(Some("Bearer "), "abc"));
        assert!(!is_authorized(Some("Basic abc"), "abc"));
        assert!(!is_authorized(Some("abc"), "abc"));
        assert!(!is_authorized(None, "abc"));
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"xyz", b"xyz"));
        assert!(!constant_time_eq(b"xyz", b"xy"));
        assert!(!constant_time_eq(b"xyz", b"xya"));
    }
}
