//! A checksum of a file's content that a writer computes from its writes, in any order and
//! split anywhere, and checks against the file read back.
//!
//! The sum is the polynomial `Σ w_k · r^k mod p` over the file's 8-byte little-endian words
//! `w_k` (`k` = byte offset / 8), with `p = 2^61 − 1` and `r` a key drawn at random for each
//! run. It is linear: each byte adds a term that depends only on its value and offset, so the
//! writes of parallel tasks, each summed on its own and added together, give the sum of the whole
//! file, and zero bytes add nothing, so holes are never written nor read. Two contents that
//! differ collide only if the random key is a root of their difference, a polynomial of degree
//! at most `n` for `n` words: with two independent keys, a chance of at most `(n / p)^2`, about
//! `2^-48` for a 1 TiB disk. It is a check against files changed behind the writer's back, not a
//! cryptographic hash.

use std::io;

use crate::File;

/// The Mersenne prime `2^61 − 1`.
const P: u64 = (1 << 61) - 1;
/// Bytes read at a time by [`ContentSum::add_file`].
const READ_WINDOW_BYTES: usize = 4 << 20;

/// The random keys of one run's sums; sums are comparable only under the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentKey([u64; 2]);

impl ContentKey {
    /// Two independent keys in `[2, p)`.
    pub fn random() -> ContentKey {
        use rand::RngExt;
        let mut rng = rand::rng();
        ContentKey([rng.random_range(2..P), rng.random_range(2..P)])
    }
}

/// The checksum of some bytes of a file under a key; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentSum {
    key: ContentKey,
    sum: [u64; 2],
}

impl ContentSum {
    /// The sum of nothing (or of zeros).
    pub fn new(key: ContentKey) -> ContentSum {
        ContentSum { key, sum: [0, 0] }
    }

    /// The key it is computed under.
    pub fn key(&self) -> ContentKey {
        self.key
    }

    /// Adds the bytes `data` at file offset `offset`. Every byte of the file must be added once
    /// at most; zeros need not be added at all.
    pub fn add(&mut self, offset: u64, data: &[u8]) {
        let mut at = 0usize;
        // The leading partial word, the whole words, the trailing partial word.
        let head = ((8 - offset % 8) % 8) as usize;
        if head > 0 {
            let n = head.min(data.len());
            self.add_words(offset / 8, &[partial_word(offset, &data[..n])]);
            at = n;
        }
        let whole = (data.len() - at) / 8 * 8;
        if whole > 0 {
            self.add_word_bytes((offset + at as u64) / 8, &data[at..at + whole]);
            at += whole;
        }
        if at < data.len() {
            let o = offset + at as u64;
            self.add_words(o / 8, &[partial_word(o, &data[at..])]);
        }
    }

    /// Adds another sum of other bytes of the same file, under the same key.
    pub fn merge(&mut self, other: &ContentSum) {
        assert_eq!(self.key, other.key, "sums under different keys do not add");
        for (a, b) in self.sum.iter_mut().zip(other.sum) {
            *a = reduce(*a + b);
        }
    }

    /// Adds the bytes of `file` in `[start, end)` as they are now, reading only the ranges the
    /// filesystem says may hold data.
    pub fn add_file(&mut self, file: &dyn File, start: u64, end: u64) -> io::Result<()> {
        let mut buf = vec![0u8; READ_WINDOW_BYTES.min((end - start) as usize)];
        let mut at = start;
        while at < end {
            let Some((from, to)) = file.next_data(at)? else {
                break;
            };
            if from >= end {
                break;
            }
            let (from, to) = (from.max(at), to.min(end));
            let mut o = from;
            while o < to {
                let n = (to - o).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], o)?;
                self.add(o, &buf[..n]);
                o += n as u64;
            }
            at = to;
        }
        Ok(())
    }

    /// Adds the little-endian words of `bytes` (a whole number of them) starting at word index
    /// `first`. Horner's rule is a chain of dependent multiplications, so the run is split into
    /// four interleaved sub-runs (words `4m + t`), each summed with `r^4`, for both keys at once:
    /// eight independent chains the processor overlaps. Then `Σ_t r^t · acc_t`, the few words
    /// past the last group of four, and the run's place, `r^first`.
    fn add_word_bytes(&mut self, first: u64, bytes: &[u8]) {
        debug_assert_eq!(bytes.len() % 8, 0);
        let word = |j: usize| {
            reduce(u64::from_le_bytes(
                bytes[8 * j..8 * j + 8].try_into().expect("8 bytes"),
            ))
        };
        let n = bytes.len() / 8;
        let groups = n / 4;
        let keys = self.key.0;
        let r4 = keys.map(|r| pow(r, 4));
        let mut acc = [[0u64; 4]; 2];
        for m in (0..groups).rev() {
            let w = [
                word(4 * m),
                word(4 * m + 1),
                word(4 * m + 2),
                word(4 * m + 3),
            ];
            for lane in 0..2 {
                for t in 0..4 {
                    acc[lane][t] = reduce(mul(acc[lane][t], r4[lane]) + w[t]);
                }
            }
        }
        for (lane, r) in keys.into_iter().enumerate() {
            let mut total = 0u64;
            let mut rt = 1u64;
            for a in acc[lane] {
                total = reduce(total + mul(a, rt));
                rt = mul(rt, r);
            }
            let mut tail = 0u64;
            for j in (4 * groups..n).rev() {
                tail = reduce(mul(tail, r) + word(j));
            }
            total = reduce(total + mul(tail, pow(r, 4 * groups as u64)));
            let term = mul(total, pow(r, first));
            self.sum[lane] = reduce(self.sum[lane] + term);
        }
    }

    /// Adds the words starting at word index `first`: Horner's rule over the run, then the run's
    /// place, `r^first`.
    fn add_words(&mut self, first: u64, words: &[u64]) {
        for (lane, r) in self.key.0.into_iter().enumerate() {
            let mut acc = 0u64;
            for &w in words.iter().rev() {
                acc = reduce(mul(acc, r) + reduce(w));
            }
            let term = mul(acc, pow(r, first));
            self.sum[lane] = reduce(self.sum[lane] + term);
        }
    }
}

/// The word holding `bytes` (all inside one word) at file offset `offset`, other lanes zero.
fn partial_word(offset: u64, bytes: &[u8]) -> u64 {
    let lane = (offset % 8) as usize;
    debug_assert!(lane + bytes.len() <= 8);
    let mut w = [0u8; 8];
    w[lane..lane + bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

/// `x mod p` for any `x` below `2^64`, up to one subtraction short: the result is below `p`.
fn reduce(x: u64) -> u64 {
    let y = (x & P) + (x >> 61);
    if y >= P { y - P } else { y }
}

/// `a · b mod p` for `a, b < p`.
fn mul(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    reduce(((x as u64) & P) + ((x >> 61) as u64))
}

fn pow(mut base: u64, mut e: u64) -> u64 {
    let mut result = 1;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// The sum of a buffer added whole equals the sum of any split of it, in any order, and
    /// zeros add nothing.
    #[test]
    fn any_split_in_any_order_gives_the_same_sum() {
        let key = ContentKey::random();
        let data = bytes(1000, 7);
        let mut whole = ContentSum::new(key);
        whole.add(3, &data);
        for cuts in [
            [1usize, 2],
            [5, 9],
            [8, 16],
            [17, 999],
            [0, 1000],
            [333, 334],
        ] {
            let mut parts = ContentSum::new(key);
            parts.add(3 + cuts[1] as u64, &data[cuts[1]..]);
            let mut first = ContentSum::new(key);
            first.add(3, &data[..cuts[0]]);
            first.add(3 + cuts[0] as u64, &data[cuts[0]..cuts[1]]);
            parts.merge(&first);
            parts.add(5000, &[0; 100]);
            assert_eq!(parts, whole, "cut at {cuts:?}");
        }
    }

    /// The interleaved sum of a run equals the plain one-word-at-a-time definition, for every
    /// run length around the groups of four and at any place.
    #[test]
    fn the_interleaved_run_sum_equals_the_definition() {
        let key = ContentKey::random();
        for words in 0..70usize {
            let data = bytes(words * 8, words as u8);
            for first in [0u64, 1, 5, 1 << 20, (1 << 37) + 3] {
                let mut fast = ContentSum::new(key);
                fast.add_word_bytes(first, &data);
                let mut slow = ContentSum::new(key);
                for (j, w) in data.chunks_exact(8).enumerate() {
                    let w = u64::from_le_bytes(w.try_into().unwrap());
                    slow.add_words(first + j as u64, &[w]);
                }
                assert_eq!(fast, slow, "{words} words at word {first}");
            }
        }
    }

    #[test]
    fn a_changed_or_moved_byte_changes_the_sum() {
        let key = ContentKey::random();
        let data = bytes(4096, 1);
        let mut want = ContentSum::new(key);
        want.add(0, &data);
        let mut changed = data.clone();
        changed[4095] ^= 0x10;
        let mut got = ContentSum::new(key);
        got.add(0, &changed);
        assert_ne!(got, want);
        let mut moved = ContentSum::new(key);
        moved.add(8, &data);
        assert_ne!(moved, want);
    }

    #[test]
    fn arithmetic_stays_below_the_prime() {
        assert_eq!(reduce(u64::MAX), u64::MAX % P);
        assert_eq!(mul(P - 1, P - 1), 1);
        assert_eq!(pow(3, 0), 1);
        assert_eq!(pow(2, 61), 1);
    }
}
