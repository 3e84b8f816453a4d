//! Key files of manually keyed links (`manual_sa.key_file`): loading, permission and length
//! checks. The material only ever lives in [`Secret`]s; no error here quotes a line of the
//! file, only line numbers and key names.
//!
//! # Format
//!
//! One `NAME = HEX` per line (`0x` prefix optional, `#` starts a comment):
//!
//! * AEAD (`manual_sa.aead`): `in` and `out`, the key plus its 4-byte salt, as `ip xfrm`
//!   takes them (aes128gcm16: 40 hex digits);
//! * cipher + integrity: `enc_in`, `auth_in`, `enc_out`, `auth_out`.
//!
//! `in` keys the SA with `spi_in` (remote → local), `out` the one with `spi_out`; the peer's
//! file has them swapped. The file must not be accessible to group or other (mode 0600 or
//! stricter): a key readable by anyone else is refused.
//!
//! # What a reader may change
//!
//! The wording of errors (keep naming the link and field, never the material); adding key
//! names for new algorithm families.

use std::{fmt, os::unix::fs::PermissionsExt, path::Path};

use super::secret::Secret;
use crate::config::{ManualSa, SaAlgorithms};

/// Keys of one SA: encryption (or AEAD) key and, for cipher + integrity, the HMAC key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaKeys {
    pub enc: Secret,
    pub auth: Option<Secret>,
}

/// Keys of both SAs of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkKeys {
    pub inbound: SaKeys,
    pub outbound: SaKeys,
}

/// Why a key file was refused. Displays as `link 'L': field 'manual_sa.key_file': …`.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyError {
    pub link: String,
    pub path: String,
    pub problem: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "link '{}': field 'manual_sa.key_file': {}: {}",
            self.link, self.path, self.problem
        )
    }
}

impl std::error::Error for KeyError {}

/// Reads and checks the key file of `link`'s manual SAs.
pub fn load(link: &str, sa: &ManualSa) -> Result<LinkKeys, KeyError> {
    let path = &sa.key_file;
    let err = |problem: String| KeyError {
        link: link.to_owned(),
        path: path.display().to_string(),
        problem,
    };
    check_permissions(path).map_err(err)?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot be read ({e}); create it with this link's keys, mode 0600"
        ))
    })?;
    parse(&text, &sa.algorithms).map_err(err)
}

fn check_permissions(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot be read ({e}); create it with this link's keys, mode 0600"))?;
    if !meta.is_file() {
        return Err("is not a regular file; name the key file itself".to_owned());
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "is accessible to group or other (mode {mode:04o}); keys must be readable by root \
             only: chmod 600 {}",
            path.display()
        ));
    }
    Ok(())
}

/// The names this algorithm family needs, in the order they are reported when missing.
fn names(alg: &SaAlgorithms) -> &'static [&'static str] {
    match alg {
        SaAlgorithms::Aead(_) => &["in", "out"],
        SaAlgorithms::CipherAuth { .. } => &["enc_in", "auth_in", "enc_out", "auth_out"],
    }
}

/// (length in bytes, how it is described) of the key called `name`.
fn expected(alg: &SaAlgorithms, name: &str) -> (usize, String) {
    match alg {
        SaAlgorithms::Aead(a) => (
            a.key_len(),
            format!(
                "{} needs {} bytes ({}-byte key + 4-byte salt)",
                a.name(),
                a.key_len(),
                a.key_len() - 4
            ),
        ),
        SaAlgorithms::CipherAuth { cipher, auth } if name.starts_with("enc") => (
            cipher.key_len(),
            format!("{} needs {} bytes", cipher.name(), cipher.key_len()),
        ),
        SaAlgorithms::CipherAuth { auth, .. } => (
            auth.key_len(),
            format!("hmac-{} needs {} bytes", auth.name(), auth.key_len()),
        ),
    }
}

/// Parses the key file's text. Errors never contain the file's content.
pub fn parse(text: &str, alg: &SaAlgorithms) -> Result<LinkKeys, String> {
    let wanted = names(alg);
    let mut found: Vec<(&'static str, Secret)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "line {line_no} is not NAME = HEX; write e.g. {} = 0x…",
                wanted[0]
            ));
        };
        let name = name.trim();
        let Some(&known) = wanted.iter().find(|w| **w == name) else {
            // A short identifier is shown; anything else might be a pasted key.
            let shown =
                if name.len() <= 16 && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    format!("'{name}'")
                } else {
                    "name".to_owned()
                };
            return Err(format!(
                "line {line_no}: unknown key {shown}; with these algorithms the keys are {}",
                wanted.join(", ")
            ));
        };
        if found.iter().any(|(f, _)| *f == known) {
            return Err(format!(
                "line {line_no}: key '{known}' is given twice; keep one"
            ));
        }
        let hex = value.trim();
        let hex = hex
            .strip_prefix("0x")
            .or_else(|| hex.strip_prefix("0X"))
            .unwrap_or(hex);
        let bytes = decode_hex(hex).ok_or_else(|| {
            format!(
                "line {line_no}: key '{known}' is not an even number of hexadecimal digits; \
                 write it as 0x followed by hex digits"
            )
        })?;
        let secret = Secret::new(bytes);
        let (len, why) = expected(alg, known);
        if secret.len() != len {
            return Err(format!(
                "key '{known}' is {} bytes but {why}: write {} hex digits",
                secret.len(),
                2 * len
            ));
        }
        found.push((known, secret));
    }
    let mut take = |name: &str| -> Result<Secret, String> {
        let i = found.iter().position(|(f, _)| *f == name).ok_or_else(|| {
            let (len, _) = expected(alg, name);
            format!(
                "key '{name}' is missing; add {name} = 0x… ({} hex digits)",
                2 * len
            )
        })?;
        Ok(found.swap_remove(i).1)
    };
    match alg {
        SaAlgorithms::Aead(_) => Ok(LinkKeys {
            inbound: SaKeys {
                enc: take("in")?,
                auth: None,
            },
            outbound: SaKeys {
                enc: take("out")?,
                auth: None,
            },
        }),
        SaAlgorithms::CipherAuth { .. } => Ok(LinkKeys {
            inbound: SaKeys {
                enc: take("enc_in")?,
                auth: Some(take("auth_in")?),
            },
            outbound: SaKeys {
                enc: take("enc_out")?,
                auth: Some(take("auth_out")?),
            },
        }),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Aead, Auth, Cipher};
    use std::path::PathBuf;

    const GCM: SaAlgorithms = SaAlgorithms::Aead(Aead::Aes128Gcm16);
    const K20_A: &str = "0x00112233445566778899aabbccddeeff01020304";
    const K20_B: &str = "ffeeddccbbaa99887766554433221100a1a2a3a4";

    #[test]
    fn aead_keys_parse_in_any_order_with_comments() {
        let text = format!("# link keys\nout = {K20_B}\n\n in = {K20_A}  # inbound\n");
        let k = parse(&text, &GCM).unwrap();
        assert_eq!(k.inbound.enc.expose()[..2], [0x00, 0x11]);
        assert_eq!(k.outbound.enc.expose()[..2], [0xff, 0xee]);
        assert_eq!(k.inbound.auth, None);
    }

    #[test]
    fn cipher_auth_keys() {
        let alg = SaAlgorithms::CipherAuth {
            cipher: Cipher::Aes128Cbc,
            auth: Auth::Sha256,
        };
        let enc = "00".repeat(16);
        let auth = "11".repeat(32);
        let text =
            format!("enc_in = {enc}\nauth_in = {auth}\nenc_out = {enc}\nauth_out = {auth}\n");
        let k = parse(&text, &alg).unwrap();
        assert_eq!(k.outbound.auth.as_ref().unwrap().len(), 32);
        let short = format!("enc_in = {enc}\nauth_in = {}\n", "11".repeat(20));
        assert_eq!(
            parse(&short, &alg).unwrap_err(),
            "key 'auth_in' is 20 bytes but hmac-sha256 needs 32 bytes: write 64 hex digits"
        );
    }

    #[test]
    fn errors_name_the_key_never_the_material() {
        let cases = [
            (
                format!("in = {K20_A}\n"),
                "key 'out' is missing; add out = 0x… (40 hex digits)",
            ),
            (
                "in = 0x0011223344556677\n".to_owned(),
                "key 'in' is 8 bytes but aes128gcm16 needs 20 bytes (16-byte key + 4-byte salt): \
                 write 40 hex digits",
            ),
            (
                format!("{K20_A}\n"),
                "line 1 is not NAME = HEX; write e.g. in = 0x…",
            ),
            (
                format!("{K20_A} = {K20_B}\n"),
                "line 1: unknown key name; with these algorithms the keys are in, out",
            ),
            (
                format!("in = {K20_A}\nin = {K20_B}\n"),
                "line 2: key 'in' is given twice; keep one",
            ),
            (
                "in = 0x00112233445566778899aabbccddeeff0102030z\n".to_owned(),
                "line 1: key 'in' is not an even number of hexadecimal digits; write it as 0x \
                 followed by hex digits",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text, &GCM).unwrap_err();
            assert_eq!(e, want);
            for secret in [&K20_A[2..], K20_B, "0011223344556677"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    fn manual(path: PathBuf) -> ManualSa {
        ManualSa {
            spi_in: 0x1001,
            spi_out: 0x1002,
            algorithms: GCM,
            key_file: path,
        }
    }

    #[test]
    fn group_or_other_access_is_refused() {
        let dir = std::env::temp_dir().join(format!("xwan-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wan1.keys");
        std::fs::write(&path, format!("in = {K20_A}\nout = {K20_B}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load("TunWAN1", &manual(path.clone()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "link 'TunWAN1': field 'manual_sa.key_file': {p}: is accessible to group or \
                 other (mode 0640); keys must be readable by root only: chmod 600 {p}",
                p = path.display()
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = load("TunWAN1", &manual(path.clone())).unwrap();
        assert_eq!(k.outbound.enc.len(), 20);
        let missing = load("TunWAN1", &manual(dir.join("nope"))).unwrap_err();
        assert!(missing.problem.starts_with("cannot be read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
