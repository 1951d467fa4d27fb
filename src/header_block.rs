//! Headers packed into one buffer, for headers kept long after their
//! request: queued jobs and stored results. A `HeaderMap` costs about a
//! hundred bytes of buckets per header on top of the text; a block costs
//! the text and six bytes.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// Each header as `name length: u16 LE, value length: u32 LE, name, value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderBlock(Bytes);

impl HeaderBlock {
    pub(crate) fn pack(headers: &HeaderMap) -> HeaderBlock {
        let size: usize = headers
            .iter()
            .map(|(n, v)| 6 + n.as_str().len() + v.len())
            .sum();
        let mut buf = BytesMut::with_capacity(size);
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            // hyper refuses heads this large long before; the casts cannot truncate.
            buf.put_u16_le(name.len() as u16);
            buf.put_u32_le(value.len() as u32);
            buf.put_slice(name);
            buf.put_slice(value.as_bytes());
        }
        HeaderBlock(buf.freeze())
    }

    /// The headers again, in their original order; values share the block.
    pub(crate) fn unpack(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.entries() {
            // Both parts were valid when packed, so they parse again.
            let name = HeaderName::from_bytes(name).expect("a packed name is valid");
            let value = HeaderValue::from_maybe_shared(self.0.slice(value))
                .expect("a packed value is valid");
            map.append(name, value);
        }
        map
    }

    /// The first value of the header `name` (lowercase), as text, without
    /// unpacking the rest.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.entries()
            .find(|(n, _)| *n == name.as_bytes())
            .and_then(|(_, value)| std::str::from_utf8(&self.0[value]).ok())
    }

    /// Each header's name, and where its value is in the block.
    fn entries(&self) -> impl Iterator<Item = (&[u8], std::ops::Range<usize>)> {
        let b = &self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at + 6 > b.len() {
                return None;
            }
            let name_len = usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
            let value_len =
                u32::from_le_bytes([b[at + 2], b[at + 3], b[at + 4], b[at + 5]]) as usize;
            let name_at = at + 6;
            let value_at = name_at + name_len;
            at = value_at + value_len;
            Some((&b[name_at..value_at], value_at..at))
        })
    }

    /// Bytes the block holds.
    pub(crate) fn size(&self) -> usize {
        self.0.len()
    }

    /// The packed form, for a store outside this process.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A block read back from outside this process, checked whole before
    /// it is trusted: `None` unless every header in it is valid.
    pub(crate) fn from_bytes(bytes: Bytes) -> Option<HeaderBlock> {
        let b = &bytes[..];
        let mut at = 0;
        while at < b.len() {
            let head = b.get(at..at + 6)?;
            let name_len = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let value_len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
            let name_at = at + 6;
            let value_at = name_at.checked_add(name_len)?;
            let end = value_at.checked_add(value_len)?;
            HeaderName::from_bytes(b.get(name_at..value_at)?).ok()?;
            HeaderValue::from_bytes(b.get(value_at..end)?).ok()?;
            at = end;
        }
        Some(HeaderBlock(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_names_values_repeats_and_order() {
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("text/csv"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.append(
            "x-custom-header",
            HeaderValue::from_bytes(b"bytes \xff ok").unwrap(),
        );
        h.append("x-empty", HeaderValue::from_static(""));
        let block = HeaderBlock::pack(&h);
        let back = block.unpack();
        assert_eq!(back, h);
        let cookies: Vec<_> = back.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(block.get("set-cookie"), Some("a=1"));
        assert_eq!(block.get("x-empty"), Some(""));
        assert_eq!(block.get("x-custom-header"), None, "not UTF-8");
        assert_eq!(block.get("accept"), None);
    }

    #[test]
    fn blocks_from_outside_are_checked_before_they_are_trusted() {
        let mut h = HeaderMap::new();
        h.append("content-type", HeaderValue::from_static("text/csv"));
        let block = HeaderBlock::pack(&h);
        let back = HeaderBlock::from_bytes(Bytes::copy_from_slice(block.as_bytes())).unwrap();
        assert_eq!(back.unpack(), h);
        let bytes = block.as_bytes();
        assert!(
            HeaderBlock::from_bytes(Bytes::copy_from_slice(&bytes[..bytes.len() - 1])).is_none()
        );
        assert!(
            HeaderBlock::from_bytes(Bytes::from_static(b"\x01\x00\x00\x00\x00\x00 ")).is_none()
        );
        assert!(HeaderBlock::from_bytes(Bytes::from_static(b"\xff\xff")).is_none());
    }

    #[test]
    fn empty_map_packs_to_nothing() {
        let block = HeaderBlock::pack(&HeaderMap::new());
        assert_eq!(block.size(), 0);
        assert!(block.unpack().is_empty());
    }
}
