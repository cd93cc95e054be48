//! Baseline Huffman decoding: the bit reader over an entropy-coded segment and the code tables.
//!
//! A table answers most lookups in one step: `LOOKUP_BITS` bits of input index an entry that
//! holds the code's length and symbol and, when the symbol's magnitude bits fit in the same
//! window, those bits already sign-extended, so a typical coefficient costs one load and one
//! shift. Longer codes take the canonical slow path. Anything malformed is reported as
//! [`Malformed`]; the caller then leaves the file to the general decoder.

/// A file this decoder does not read (the general decoder decides what it is).
#[derive(Debug)]
pub struct Malformed;

const LOOKUP_BITS: u32 = 11;

/// One lookup entry, packed: bits 0–4 the bits it consumes (0: not in the table), bit 5 set
/// when the value is included, bits 8–15 the symbol, bits 16–31 the sign-extended value.
#[derive(Clone, Copy, Default)]
struct Entry(u32);

const WITH_VALUE: u32 = 1 << 5;

/// A decoded symbol: `run` zeros before a coefficient of `size` magnitude bits and `value`.
pub struct Symbol {
    pub run: u32,
    pub size: u32,
    pub value: i32,
}

pub struct Table {
    lookup: Box<[Entry; 1 << LOOKUP_BITS]>,
    /// For each code length, the largest code of that length (-1: none) and the index into
    /// `symbols` of its first code minus that code.
    max_code: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
}

/// The value of `size` magnitude bits `bits` (JPEG's EXTEND).
fn extend(bits: u32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if bits < 1 << (size - 1) {
        bits as i32 - (1 << size) + 1
    } else {
        bits as i32
    }
}

impl Table {
    /// Builds a table from a DHT segment's 16 counts and its symbols.
    pub fn new(counts: &[u8; 16], symbols: &[u8]) -> Result<Table, Malformed> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return Err(Malformed);
        }
        let mut lookup = Box::new([Entry::default(); 1 << LOOKUP_BITS]);
        let (mut max_code, mut offset) = ([-1i32; 17], [0i32; 17]);
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..=16u32 {
            let count = u32::from(counts[len as usize - 1]);
            offset[len as usize] = index as i32 - code as i32;
            for _ in 0..count {
                // A complete code set never runs past all-ones of its length.
                if code >= 1 << len {
                    return Err(Malformed);
                }
                let symbol = symbols[index];
                if len <= LOOKUP_BITS {
                    let size = u32::from(symbol & 15);
                    let spare = LOOKUP_BITS - len;
                    for tail in 0..1u32 << spare {
                        let slot = (code << spare | tail) as usize;
                        lookup[slot] = if len + size <= LOOKUP_BITS {
                            let bits = tail >> (spare - size) & ((1 << size) - 1);
                            let value = extend(bits, size) as u32;
                            Entry((len + size) | WITH_VALUE | u32::from(symbol) << 8 | value << 16)
                        } else {
                            Entry(len | u32::from(symbol) << 8)
                        };
                    }
                }
                code += 1;
                index += 1;
            }
            if count > 0 {
                max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(Table {
            lookup,
            max_code,
            offset,
            symbols: symbols.to_vec(),
        })
    }
}

/// Reads bits, most significant first, from one entropy-coded interval: stuffed bytes (`FF 00`)
/// are unstuffed, and at a marker it stops and feeds zero bits, which it counts so that reading
/// into them is detected.
pub struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    /// The next bits, left-aligned; `count` of them are valid.
    buf: u64,
    count: u32,
    at_marker: bool,
    /// How many of the valid bits are zeros fed after the marker.
    padding: u32,
}

impl<'a> Bits<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Bits<'a> {
        Bits {
            data,
            pos,
            buf: 0,
            count: 0,
            at_marker: false,
            padding: 0,
        }
    }

    /// Tops the buffer up to at least 57 bits.
    #[inline]
    fn refill(&mut self) {
        if self.count > 56 {
            return;
        }
        // Eight bytes without an FF among them go in at once.
        if let Some(chunk) = self.data.get(self.pos..self.pos + 8)
            && !self.at_marker
        {
            let word = u64::from_be_bytes(chunk.try_into().unwrap());
            let inverted = !word;
            let has_ff =
                inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                let bytes = (64 - self.count) / 8;
                let keep = !((1u64 << (64 - bytes * 8)).wrapping_sub(1));
                self.buf |= (word & keep) >> self.count;
                self.count += bytes * 8;
                self.pos += bytes as usize;
                return;
            }
        }
        while self.count <= 56 {
            let byte = self.next_byte();
            self.buf |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn next_byte(&mut self) -> u8 {
        if !self.at_marker {
            match self.data.get(self.pos..) {
                Some([0xFF, 0x00, ..]) => {
                    self.pos += 2;
                    return 0xFF;
                }
                Some([0xFF, ..]) | Some([]) | None => self.at_marker = true,
                Some([byte, ..]) => {
                    self.pos += 1;
                    return *byte;
                }
            }
        }
        self.padding += 8;
        0
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// Reads `n` (1..=16) bits as a number.
    fn take(&mut self, n: u32) -> u32 {
        let v = (self.buf >> (64 - n)) as u32;
        self.consume(n);
        v
    }

    /// Decodes one symbol and its magnitude bits.
    #[inline]
    pub fn symbol(&mut self, table: &Table) -> Result<Symbol, Malformed> {
        if self.count < 32 {
            self.refill();
        }
        let e = table.lookup[(self.buf >> (64 - LOOKUP_BITS)) as usize].0;
        let symbol = e >> 8 & 0xFF;
        let (run, size) = (symbol >> 4, symbol & 15);
        if e & WITH_VALUE != 0 {
            self.consume(e & 31);
            return Ok(Symbol {
                run,
                size,
                value: (e as i32) >> 16,
            });
        }
        let symbol = if e & 31 != 0 {
            self.consume(e & 31);
            symbol
        } else {
            self.long_code(table)?
        };
        let (run, size) = (symbol >> 4, symbol & 15);
        let value = if size == 0 {
            0
        } else {
            extend(self.take(size), size)
        };
        Ok(Symbol { run, size, value })
    }

    /// A code longer than the lookup window, the canonical way.
    fn long_code(&mut self, table: &Table) -> Result<u32, Malformed> {
        let window = (self.buf >> 48) as i32;
        for len in LOOKUP_BITS + 1..=16 {
            let code = window >> (16 - len);
            if code <= table.max_code[len as usize] {
                self.consume(len);
                let index = table.offset[len as usize] + code;
                return table
                    .symbols
                    .get(index as usize)
                    .map(|&s| u32::from(s))
                    .ok_or(Malformed);
            }
        }
        Err(Malformed)
    }

    /// Whether decoding has read past the end of the interval's data into the zeros fed after
    /// it: the data was cut short.
    pub fn overran(&self) -> bool {
        self.count < self.padding
    }

    /// Ends an interval at a restart marker: only the byte's padding may be left, and the marker
    /// must be `RSTn` with the expected `n`. Returns the position after it.
    pub fn restart(mut self, n: u8) -> Result<usize, Malformed> {
        self.refill();
        if !self.at_marker || self.overran() || self.count - self.padding >= 8 {
            return Err(Malformed);
        }
        match self.data.get(self.pos..self.pos + 2) {
            Some(&[0xFF, m]) if m == 0xD0 + (n & 7) => Ok(self.pos + 2),
            _ => Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code lengths of the luminance AC table of the JPEG specification (Annex K.3), with
    /// symbols chosen for the test: code `00` is 0x01, `1010` is EOB, and the first 16-bit code,
    /// `1111111110000010` (index 37), is 0x15.
    fn table() -> Table {
        let counts = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
        let mut symbols = vec![0x02u8; 162];
        symbols[0] = 0x01;
        symbols[3] = 0x00;
        symbols[37] = 0x15;
        Table::new(&counts, &symbols).unwrap()
    }

    #[test]
    fn short_long_and_stuffed_codes_decode_and_a_cut_is_seen() {
        let t = table();
        // 00 1 | 1010 | 1111111110000010 10110 | 1111 (padding), the FF byte stuffed.
        let data = [0x35, 0xFF, 0x00, 0x05, 0x6F, 0xFF, 0xD9];
        let mut r = Bits::new(&data, 0);
        let s = r.symbol(&t).unwrap();
        assert_eq!((s.run, s.size, s.value), (0, 1, 1));
        let s = r.symbol(&t).unwrap();
        assert_eq!((s.run, s.size), (0, 0));
        let s = r.symbol(&t).unwrap();
        assert_eq!((s.run, s.size, s.value), (1, 5, 22));
        assert!(!r.overran());
        // Reading on runs into the zeros after the marker.
        for _ in 0..4 {
            r.symbol(&t).unwrap();
        }
        assert!(r.overran());
    }

    #[test]
    fn a_restart_marker_ends_an_interval_only_after_its_padding() {
        let t = table();
        // 00 1 then five 1s of padding, RST3.
        let data = [0x3F, 0xFF, 0xD3, 0x00];
        let mut r = Bits::new(&data, 0);
        r.symbol(&t).unwrap();
        assert_eq!(Bits::new(&data, 0).restart(3).ok(), None, "data is left");
        assert_eq!(r.restart(3).ok(), Some(3));
        let mut r = Bits::new(&data, 0);
        r.symbol(&t).unwrap();
        assert!(r.restart(4).is_err(), "the wrong marker number");
    }

    #[test]
    fn an_oversubscribed_code_is_refused() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes
        assert!(Table::new(&counts, &[1, 2, 3]).is_err());
    }

    #[test]
    fn extend_gives_negative_values_below_half() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0b010, 3), -5);
        assert_eq!(extend(0b110, 3), 6);
    }
}
