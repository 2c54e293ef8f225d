//! An instance's address and metadata in one heap block ([`AddrMeta`]).
//!
//! A typical instance has an address and a few metadata entries: as separate boxed strings
//! and a slice of pairs, six allocations, most of them smaller than the allocator's least
//! chunk. Packed, they are one: `[count][lengths][addr][key1][value1]...` in a `Box<str>`.
//! The count and each length are written as three bytes of seven bits each, so every header
//! byte is ASCII: the block is valid UTF-8 and every string is a plain `&str` slice of it,
//! with no decoding and no `unsafe`.

/// Bytes per number in the header.
const NUMBER: usize = 3;
/// Largest number a header holds (21 bits): a string of 2 MiB, or as many entries.
const MAX: usize = (1 << (7 * NUMBER)) - 1;

/// An address and its metadata entries, in wire order, in one allocation.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AddrMeta(Box<str>);

fn put(header: &mut String, n: usize) {
    assert!(
        n <= MAX,
        "an instance's address and metadata hold at most {MAX} entries of {MAX} bytes each"
    );
    for shift in [14, 7, 0] {
        header.push(char::from(((n >> shift) & 0x7f) as u8));
    }
}

fn get(header: &[u8], i: usize) -> usize {
    let b = &header[i * NUMBER..(i + 1) * NUMBER];
    (usize::from(b[0]) << 14) | (usize::from(b[1]) << 7) | usize::from(b[2])
}

impl AddrMeta {
    /// Packs `addr` and the `meta` entries.
    ///
    /// # Panics
    ///
    /// When a string is longer than 2 MiB or there are more entries than that (a received
    /// token is at most 4 KiB).
    pub(crate) fn new<'a>(
        addr: &str,
        meta: impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> AddrMeta {
        let strings = 1 + 2 * meta.len();
        let text: usize = addr.len() + meta.clone().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let mut block = String::with_capacity(NUMBER * (1 + strings) + text);
        put(&mut block, meta.len());
        put(&mut block, addr.len());
        for (k, v) in meta.clone() {
            put(&mut block, k.len());
            put(&mut block, v.len());
        }
        block.push_str(addr);
        for (k, v) in meta {
            block.push_str(k);
            block.push_str(v);
        }
        AddrMeta(block.into_boxed_str())
    }

    fn entries(&self) -> usize {
        get(self.0.as_bytes(), 0)
    }

    /// Where the strings start.
    fn text_start(&self) -> usize {
        NUMBER * (2 + 2 * self.entries())
    }

    /// The address.
    pub(crate) fn addr(&self) -> &str {
        let start = self.text_start();
        &self.0[start..start + get(self.0.as_bytes(), 1)]
    }

    /// The metadata entries, in wire order.
    pub(crate) fn meta(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        let header = self.0.as_bytes();
        let mut at = self.text_start() + get(header, 1);
        (0..self.entries()).map(move |i| {
            let (k, v) = (get(header, 2 + 2 * i), get(header, 3 + 2 * i));
            let key = &self.0[at..at + k];
            let value = &self.0[at + k..at + k + v];
            at += k + v;
            (key, value)
        })
    }

    /// Whether `addr` and `meta` are what this holds, compared without building anything.
    pub(crate) fn equals<'a>(
        &self,
        addr: &str,
        meta: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> bool {
        self.addr() == addr
            && self.entries() == meta.len()
            && self.meta().zip(meta).all(|(a, b)| a == b)
    }
}

impl std::fmt::Debug for AddrMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrMeta")
            .field("addr", &self.addr())
            .field("meta", &self.meta().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_back_as_they_went_in() {
        let meta = [
            ("version", "1.2.3"),
            ("zone", "eu-1a"),
            ("", ""),
            ("ключ", "值"),
        ];
        let packed = AddrMeta::new("[::1]:8080", meta.iter().copied());
        assert_eq!(packed.addr(), "[::1]:8080");
        assert_eq!(packed.meta().len(), 4);
        assert_eq!(packed.meta().collect::<Vec<_>>(), meta);
        assert!(packed.equals("[::1]:8080", meta.iter().copied()));
        assert!(!packed.equals("[::1]:8081", meta.iter().copied()));
        assert!(!packed.equals("[::1]:8080", meta[..3].iter().copied()));
        let empty = AddrMeta::new("h:1", std::iter::empty());
        assert_eq!((empty.addr(), empty.meta().len()), ("h:1", 0));
    }

    #[test]
    fn a_long_value_keeps_its_length() {
        let long = "x".repeat(300_000);
        let packed = AddrMeta::new("h:1", [("k", long.as_str())].into_iter());
        assert_eq!(packed.meta().next().unwrap().1.len(), 300_000);
    }

    #[test]
    fn one_allocation_holds_a_typical_address_and_two_entries() {
        let packed = AddrMeta::new(
            "10.1.2.3:8080",
            [("version", "1.2.3"), ("zone", "eu-1a")].into_iter(),
        );
        assert_eq!(packed.0.len(), 3 * 6 + 13 + 7 + 5 + 4 + 5);
    }
}
