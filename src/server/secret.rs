//! The cluster secret (`raftkv node --secret-file FILE`): the key of the HMAC proofs in
//! the peer handshake (`peer_auth`).
//!
//! The secret is the file's bytes with trailing whitespace trimmed, so a file written
//! by `echo` or an editor (a final newline) holds the same secret as one written by
//! `printf`. It must have at least [`MIN_SECRET`] bytes: a short password is guessed
//! offline from one recorded handshake. A file that group or others may read is used
//! all the same, with a warning: refusing would only make the operator loosen
//! something else, and the warning names the fix.
//!
//! Only the keyed HMAC state is kept, never a copy of the bytes to print: `Debug`
//! shows nothing of it.

use std::{fmt, fs, path::Path};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::logging::warning;
use crate::error::{Error, Result};

/// Fewest bytes a secret may have (128 bits if they are random).
pub(crate) const MIN_SECRET: usize = 16;

/// The length of a proof: one HMAC-SHA256.
pub(crate) const PROOF_BYTES: usize = 32;

/// The cluster secret, ready to compute and check proofs.
#[derive(Clone)]
pub(crate) struct Secret {
    /// HMAC-SHA256 keyed with the secret, before any message: cloned per proof.
    keyed: Hmac<Sha256>,
}

impl Secret {
    /// Reads the secret from `path` (see the module documentation). Errors name the
    /// file; nothing in it is ever printed.
    pub(crate) fn load(path: &Path) -> Result<Secret> {
        let bytes = fs::read(path)
            .map_err(|e| Error::io(format!("cannot read secret file {}", path.display()), e))?;
        let secret = Secret::new(bytes.trim_ascii_end()).map_err(|short| {
            Error::Config(format!(
                "secret file {}: {short}; for example `head -c 32 /dev/urandom | od -An -tx1 \
                 | tr -d ' \\n' > FILE` writes a good one",
                path.display()
            ))
        })?;
        if let Some(mode) = readable_by_others(path) {
            warning!(
                "secret file {} may be read by group or others (mode {mode:o}); \
                 `chmod 600 {}` keeps the cluster secret to its owner",
                path.display(),
                path.display()
            );
        }
        Ok(secret)
    }

    /// A secret of exactly these bytes; an error if there are fewer than
    /// [`MIN_SECRET`].
    pub(crate) fn new(bytes: &[u8]) -> std::result::Result<Secret, String> {
        if bytes.len() < MIN_SECRET {
            return Err(format!(
                "the secret has {} bytes (trailing whitespace aside); it needs at least {MIN_SECRET}",
                bytes.len()
            ));
        }
        // HMAC takes keys of any length, so this cannot fail; say so without a panic.
        let keyed = Hmac::<Sha256>::new_from_slice(bytes)
            .map_err(|e| format!("the secret cannot key an HMAC: {e}"))?;
        Ok(Secret { keyed })
    }

    /// HMAC-SHA256 of `message` under the secret.
    pub(crate) fn prove(&self, message: &[u8]) -> [u8; PROOF_BYTES] {
        self.keyed
            .clone()
            .chain_update(message)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the HMAC-SHA256 of `message` under the secret, compared in
    /// constant time (a timing difference would let a stranger find a proof byte by
    /// byte).
    pub(crate) fn verify(&self, message: &[u8], proof: &[u8]) -> bool {
        self.keyed
            .clone()
            .chain_update(message)
            .verify_slice(proof)
            .is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The file's mode if group or others may read it.
#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_whitespace_is_trimmed_and_short_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "0123456789abcdef\n").unwrap();
        let with_newline = Secret::load(&path).unwrap();
        fs::write(&path, "0123456789abcdef").unwrap();
        let without = Secret::load(&path).unwrap();
        assert_eq!(with_newline.prove(b"m"), without.prove(b"m"));
        // Leading whitespace is part of the secret.
        fs::write(&path, " 0123456789abcdef").unwrap();
        assert_ne!(
            Secret::load(&path).unwrap().prove(b"m"),
            without.prove(b"m")
        );

        fs::write(&path, "0123456789abcde \t\r\n\n").unwrap();
        let e = Secret::load(&path).unwrap_err().to_string();
        assert!(e.contains("15 bytes") && e.contains("at least 16"), "{e}");
        assert!(!e.contains("0123"), "the secret is never printed: {e}");
        let e = Secret::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read secret file"), "{e}");
    }

    #[test]
    fn proofs_are_hmac_sha256_and_verify_only_for_their_message() {
        // RFC 4231, test case 1.
        let secret = Secret::new(&[0x0b; 20]).unwrap();
        let proof = secret.prove(b"Hi There");
        assert_eq!(
            crate::hex::encode(&proof),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert!(secret.verify(b"Hi There", &proof));
        assert!(!secret.verify(b"Hi there", &proof));
        assert!(!secret.verify(b"Hi There", &proof[..31]));
        let other = Secret::new(&[0x0c; 20]).unwrap();
        assert!(!other.verify(b"Hi There", &proof));
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_read_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "0123456789abcdef").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(readable_by_others(&path), None);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_by_others(&path), Some(0o640));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        assert_eq!(readable_by_others(&path), Some(0o604));
    }
}
