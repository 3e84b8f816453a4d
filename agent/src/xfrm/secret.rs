//! [`Secret`]: key material that cannot be printed. `Debug` shows only the length, there is
//! no `Display` or `Serialize`, and the bytes are overwritten when it is dropped, so a key
//! read from a key file reaches the kernel and nothing else (logs, status, errors, metrics).

use std::fmt;

/// Key bytes. Read them with [`Secret::expose`] only to hand them to the kernel.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The material itself: for building the netlink message, nothing else.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // Volatile so the wipe of memory about to be freed is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_length_only() {
        let s = Secret::new(vec![0xde, 0xad, 0xbe, 0xef]);
        let shown = format!("{s:?} {:?}", Some(&s));
        assert_eq!(shown, "Secret(4 bytes) Some(Secret(4 bytes))");
        assert!(!shown.to_lowercase().contains("dead"));
    }
}
