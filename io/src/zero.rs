//! [`is_zero`]: the all-zero test that decides what is left a hole, shared by every writer of
//! sparse files (materialized images, base images, failover targets, ingest's block facts).

/// Whether every byte is zero; ORs 64-byte lanes so the compiler can vectorize it.
pub fn is_zero(bytes: &[u8]) -> bool {
    let mut lanes = bytes.chunks_exact(64);
    let body = lanes
        .by_ref()
        .all(|lane| lane.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body && lanes.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_a_single_set_byte_anywhere() {
        for len in [0usize, 1, 63, 64, 65, 4096, 5000] {
            let zeros = vec![0u8; len];
            assert!(is_zero(&zeros));
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    let mut b = zeros.clone();
                    b[at] = 1;
                    assert!(!is_zero(&b), "len {len} at {at}");
                }
            }
        }
    }
}
