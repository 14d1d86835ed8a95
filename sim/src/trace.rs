//! The trace fingerprint: a 64-bit FNV-1a-style hash folded over every
//! event in order (deliveries with their bytes, timeouts, view changes,
//! faults). Two runs with equal hashes took the same path.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The running hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace(u64);

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

impl Trace {
    /// The empty trace.
    pub fn new() -> Self {
        Trace(OFFSET)
    }

    /// Folds one word in (whole words at a time: bytes are folded 8 at once).
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(PRIME).rotate_left(29);
    }

    /// Folds several words in.
    pub fn words(&mut self, ws: &[u64]) {
        ws.iter().for_each(|&w| self.word(w));
    }

    /// Folds a byte string in, length first.
    pub fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in chunks.by_ref() {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_change_the_hash() {
        let mut a = Trace::new();
        a.words(&[1, 2]);
        let mut b = Trace::new();
        b.words(&[2, 1]);
        assert_ne!(a, b);
        let mut c = Trace::new();
        c.bytes(b"hello");
        let mut d = Trace::new();
        d.bytes(b"hellp");
        assert_ne!(c, d);
    }
}
