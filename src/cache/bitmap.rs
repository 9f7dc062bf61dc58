//! Which chunks of a partial blob are present: one bit per chunk, stored as-is in the
//! index. Knows nothing of files or locks.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitmap {
    bits: Vec<u8>,
    len: u64,
}

impl Bitmap {
    pub fn new(len: u64) -> Bitmap {
        Bitmap {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
        }
    }

    /// Restores a bitmap read from the index; None if its length does not fit `len`.
    pub fn from_bytes(bytes: Vec<u8>, len: u64) -> Option<Bitmap> {
        (bytes.len() as u64 == len.div_ceil(8)).then_some(Bitmap { bits: bytes, len })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    pub fn set(&mut self, i: u64) {
        self.bits[(i / 8) as usize] |= 1 << (i % 8);
    }

    pub fn clear(&mut self, i: u64) {
        self.bits[(i / 8) as usize] &= !(1 << (i % 8));
    }

    pub fn count(&self) -> u64 {
        self.bits.iter().map(|b| b.count_ones() as u64).sum()
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    pub fn fill(&mut self) {
        for i in 0..self.len {
            self.set(i);
        }
    }

    /// Indexes of set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count_and_round_trip() {
        let mut b = Bitmap::new(11);
        b.set(0);
        b.set(10);
        assert!(b.get(10) && !b.get(9) && !b.get(11));
        assert_eq!(b.count(), 2);
        b.clear(0);
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![10]);
        let back = Bitmap::from_bytes(b.as_bytes().to_vec(), 11).unwrap();
        assert_eq!(back, b);
        assert!(Bitmap::from_bytes(vec![0; 5], 11).is_none());
        b.fill();
        assert!(b.is_full());
    }
}
