//! Small file outputs kept inside their stage record instead of a blob of their own.
//!
//! On ext4 a new file costs far more than its bytes (`__ext4_new_inode` was most of a cold
//! run's system time with a blob and a record per stage), and a blob of a few bytes still takes
//! a whole block. A file output of at most `INLINE_MAX` bytes therefore travels in its record:
//! as text when it is UTF-8 (the record stays readable), as base64 otherwise. Its hash is still
//! the file's content hash, checked whenever the content is put back, so a record edited behind
//! sluice's back is refused like a damaged blob.

use crate::hash::{ContentHash, SmallFile};
use base64::Engine;

/// The largest file output kept inline: one file system block, which a blob of its own would
/// take anyway.
pub const INLINE_MAX: u64 = 4096;

/// A small output's content and mode, as a record keeps it. Exactly one of `text` and `base64`
/// is set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inline {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The file was executable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

impl Inline {
    pub fn new(bytes: Vec<u8>, exec: bool) -> Inline {
        match String::from_utf8(bytes) {
            Ok(text) => Inline {
                text: Some(text),
                base64: None,
                exec,
            },
            Err(e) => Inline {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                exec,
            },
        }
    }

    /// A small output as the hasher read it, with the hash of exactly these bytes: what a
    /// record keeps for an output it files without reading it again.
    pub fn hashed(small: SmallFile) -> (ContentHash, Inline) {
        let (hash, exec) = (small.hash(), small.exec());
        (hash, Inline::new(small.into_bytes(), exec))
    }

    /// The content, once it is checked against `hash`; the error says what is wrong with it.
    pub fn content(&self, hash: &ContentHash) -> Result<Vec<u8>, String> {
        let bytes = match (&self.text, &self.base64) {
            (Some(t), None) => t.as_bytes().to_vec(),
            (None, Some(b)) if b.len() as u64 <= INLINE_MAX * 2 => {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("inline content is not base64: {e}"))?
            }
            (None, Some(_)) => return Err("inline content is over its bound".into()),
            _ => return Err("inline content must be either `text` or `base64`".into()),
        };
        if bytes.len() as u64 > INLINE_MAX {
            return Err(format!(
                "inline content is {} bytes, over the {INLINE_MAX}-byte bound",
                bytes.len()
            ));
        }
        let actual = ContentHash::of(&bytes);
        if &actual != hash {
            return Err(format!(
                "inline content {} does not match its hash {}",
                actual.short(),
                hash.short()
            ));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_bytes_go_base64_both_checked_by_hash() {
        let t = Inline::new(b"0.93\n".to_vec(), false);
        assert_eq!(t.text.as_deref(), Some("0.93\n"));
        assert_eq!(t.content(&ContentHash::of(b"0.93\n")).unwrap(), b"0.93\n");
        let raw = vec![0xff, 0x00, 0x80];
        let b = Inline::new(raw.clone(), true);
        assert!(b.text.is_none() && b.base64.is_some() && b.exec);
        assert_eq!(b.content(&ContentHash::of(&raw)).unwrap(), raw);
        let err = t.content(&ContentHash::of(b"other")).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn malformed_inline_content_is_refused() {
        let h = ContentHash::of(b"");
        let both = Inline {
            text: Some(String::new()),
            base64: Some(String::new()),
            exec: false,
        };
        assert!(both.content(&h).is_err());
        let neither = Inline {
            text: None,
            base64: None,
            exec: false,
        };
        assert!(neither.content(&h).is_err());
        let bad = Inline {
            text: None,
            base64: Some("!!".into()),
            exec: false,
        };
        assert!(bad.content(&h).unwrap_err().contains("base64"));
        let big = "x".repeat(INLINE_MAX as usize + 1);
        let over = Inline::new(big.clone().into_bytes(), false);
        assert!(over
            .content(&ContentHash::of(big.as_bytes()))
            .unwrap_err()
            .contains("bound"));
    }
}
