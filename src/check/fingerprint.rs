//! Fingerprints of search configurations, for the memo table (see "Fingerprinted
//! configurations" in the essay of `check/mod.rs`).
//!
//! A configuration is the set of operations linearized so far plus the key's value. The
//! set is fingerprinted by the XOR of a random 128-bit Zobrist key per operation, so taking
//! or undoing an operation is one XOR; the value by a 128-bit polynomial hash (two bases
//! modulo the Mersenne prime 2^61 − 1), which an append extends in O(1) from the hash and
//! length of the appended string. The memo table stores the XOR of the two.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The Mersenne prime 2^61 − 1, modulus of the polynomial string hash.
const MODULUS: u64 = (1 << 61) - 1;
/// Two fixed bases for the polynomial hash, drawn at random once.
const BASES: [u64; 2] = [
    0x0d9e_8b5f_3c1a_7e45 % MODULUS,
    0x1b6f_2a4c_9e37_d081 % MODULUS,
];
/// Fingerprint of the absent value; those of present values have both halves below 2^61.
pub(super) const ABSENT: u128 = u128::MAX;
/// Fingerprint of the abstract unobservable value.
pub(super) const UNOBSERVABLE: u128 = u128::MAX - 1;

/// `a · b mod 2^61 − 1`, by folding the 122-bit product.
fn mul_mod(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    let folded = ((x >> 61) as u64) + ((x as u64) & MODULUS);
    let folded = (folded & MODULUS) + (folded >> 61);
    if folded >= MODULUS {
        folded - MODULUS
    } else {
        folded
    }
}

/// `a + b mod 2^61 − 1`, for `a, b` below the modulus.
fn add_mod(a: u64, b: u64) -> u64 {
    let sum = a + b;
    if sum >= MODULUS {
        sum - MODULUS
    } else {
        sum
    }
}

/// `base^exp mod 2^61 − 1`, by squaring.
fn pow_mod(mut base: u64, mut exp: u64) -> u64 {
    let mut result = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul_mod(result, base);
        }
        base = mul_mod(base, base);
        exp >>= 1;
    }
    result
}

/// The polynomial hash of a string under both bases: `h(s) = Σ (s[i] + 1) · B^(len-1-i)`.
/// Bytes map to 1..=256, so strings of different lengths hash as different polynomials, and
/// `h(s ++ t) = h(s) · B^len(t) + h(t)`.
pub(super) fn poly_hash(s: &str) -> [u64; 2] {
    BASES.map(|base| {
        s.bytes()
            .fold(0, |h, b| add_mod(mul_mod(h, base), u64::from(b) + 1))
    })
}

/// The two halves of a hash as one 128-bit fingerprint.
pub(super) fn pack(halves: [u64; 2]) -> u128 {
    (u128::from(halves[0]) << 64) | u128::from(halves[1])
}

/// The two halves of a present value's fingerprint.
pub(super) fn unpack(fingerprint: u128) -> [u64; 2] {
    [(fingerprint >> 64) as u64, fingerprint as u64]
}

/// `B^len` for each base: what the hash of a prefix is multiplied by when `len` bytes
/// are appended to it.
pub(super) fn shift(len: usize) -> [u64; 2] {
    BASES.map(|base| pow_mod(base, len as u64))
}

/// The hash of `s ++ t` from `h(s)`, `h(t)` and `shift(len(t))`.
pub(super) fn concat(prefix: [u64; 2], suffix: [u64; 2], shift: [u64; 2]) -> [u64; 2] {
    [0, 1].map(|i| add_mod(mul_mod(prefix[i], shift[i]), suffix[i]))
}

/// The next Zobrist key from the generator state `state`.
pub(super) fn zobrist_key(state: &mut u64) -> u128 {
    (u128::from(splitmix64(state)) << 64) | u128::from(splitmix64(state))
}

/// SplitMix64: a tiny deterministic generator for the Zobrist keys.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The memo table's hasher: its keys are already uniformly distributed 128-bit
/// fingerprints, so folding them is enough.
#[derive(Default)]
pub(super) struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, x: u128) {
        self.0 ^= (x as u64) ^ ((x >> 64) as u64);
    }
}

/// The fingerprints of the configurations explored so far.
pub(super) type Memo = HashSet<u128, BuildHasherDefault<FingerprintHasher>>;
