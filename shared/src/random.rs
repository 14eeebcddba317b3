//! The one source of randomness: the operating system's CSPRNG.
//!
//! Everything random here is security-relevant (ids, API keys, state, nonces, jitter that keeps
//! workers apart), and an operating system without a random source is not one to run on: its absence
//! panics once, here, with a message that says so.

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

/// Fills `buffer` with random bytes.
pub fn fill(buffer: &mut [u8]) {
    try_fill(buffer).expect("the operating system's random source is unavailable");
}

/// Fills `buffer` with random bytes, or says why it cannot: for the refresh path, where a typed error
/// keeps one connection's failure from ending a whole scheduled run.
pub fn try_fill(buffer: &mut [u8]) -> Result<(), String> {
    getrandom::fill(buffer).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
    }
}
