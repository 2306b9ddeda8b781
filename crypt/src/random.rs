//! Random bytes from the operating system (getrandom(2)), for data keys, salts and nonces.
//!
//! Drawn directly from the kernel rather than from a user-space generator so that a forked
//! process can never repeat another's draw.

/// `N` bytes from the operating system's random source.
///
/// # Panics
///
/// If the operating system cannot give randomness. On Linux getrandom(2) blocks until the pool
/// is initialised and does not fail after that; a process that cannot draw randomness must not
/// go on to write encrypted data, so this is not an error a caller could handle.
pub(crate) fn os_random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(error) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random source failed: {error}");
    }
    bytes
}
