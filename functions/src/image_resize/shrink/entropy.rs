//! Baseline Huffman decoding: the bit reader over an entropy-coded segment and the code tables.
//!
//! A table answers most lookups in one step: `LOOKUP_BITS` bits of input index an entry that
//! holds the code's length and symbol and, when the symbol's magnitude bits fit in the same
//! window, those bits already sign-extended, so a typical coefficient costs one load and one
//! shift. An AC table has a second lookup, [`AcTable`], whose entries hold two short symbols
//! when both fit the window, halving the chain of dependent loads that bounds the decoding
//! speed. Longer codes take the canonical slow path. Anything malformed is reported as
//! [`Malformed`]; the caller then leaves the file to the general decoder.

/// A file this decoder does not read (the general decoder decides what it is).
#[derive(Debug)]
pub struct Malformed;

const LOOKUP_BITS: u32 = 12;
// A pair entry keeps the bits it consumes, at most `LOOKUP_BITS`, in its bits 0–3.
const _: () = assert!(LOOKUP_BITS <= 15);

/// One lookup entry, packed: bits 0–4 the bits it consumes (0: not in the table), bit 5 set
/// when the value is included, bits 8–15 the symbol, bits 16–31 the sign-extended value.
#[derive(Clone, Copy, Default)]
struct Entry(u32);

const WITH_VALUE: u32 = 1 << 5;

impl Entry {
    #[inline]
    fn used(self) -> u32 {
        self.0 & 31
    }

    #[inline]
    fn has_value(self) -> bool {
        self.0 & WITH_VALUE != 0
    }

    #[inline]
    fn symbol(self) -> u32 {
        self.0 >> 8 & 0xFF
    }

    #[inline]
    fn value(self) -> i32 {
        (self.0 as i32) >> 16
    }
}

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

/// An AC table's second lookup: one `LOOKUP_BITS` window answers up to two symbols at once, so
/// the common short codes cost half the dependent loads. Every entry is read the same way,
/// without a branch on how many symbols it holds: an absent second symbol is a zero written at
/// the next position with no advance.
pub struct AcTable {
    pub single: Table,
    pairs: Box<[u32; 1 << LOOKUP_BITS]>,
}

/// One [`AcTable`] pair entry, packed: bits 0–3 the bits it consumes and bits 4–5 clear, so
/// the entry itself is the shift count (a shift takes its count modulo 64); bits 6–9 and
/// 11–14 the first and second symbol's run of zeros, bits 10 and 15 whether each symbol
/// advances past its coefficient (a coefficient or a run of 16 zeros); bit 16 set when the
/// block ends with the entry (an end-of-block symbol); bits 17–22 the second value (6 bits,
/// signed) and 23–31 the first (9 bits, signed). An entry of 0 is not usable: the window
/// starts a symbol that needs the single path.
#[derive(Clone, Copy)]
pub struct Pair(u32);

const PAIR_ENDS: u32 = 1 << 16;

/// Where a pair entry's symbol puts its coefficient and how far it moves the position.
#[derive(Clone, Copy)]
pub struct Step {
    pub offset: usize,
    pub advance: usize,
    pub value: i32,
}

impl Step {
    /// The step of a symbol's packed 5-bit field (run, advances) and its value.
    #[inline]
    fn new(field: u32, value: i32) -> Step {
        let run = field & 15;
        Step {
            offset: run as usize,
            advance: (run + (field >> 4)) as usize,
            value,
        }
    }
}

impl Pair {
    /// The first symbol's coefficient.
    #[inline]
    pub fn first(self) -> Step {
        Step::new(self.0 >> 6 & 31, (self.0 as i32) >> 23)
    }

    /// The second symbol's coefficient (offset, advance and value 0 when there is none).
    #[inline]
    pub fn second(self) -> Step {
        Step::new(self.0 >> 11 & 31, ((self.0 << 9) as i32) >> 26)
    }

    /// Whether the block ends after this entry's symbols.
    #[inline]
    pub fn ends(self) -> bool {
        self.0 & PAIR_ENDS != 0
    }
}

/// What a single lookup's symbol becomes in a pair entry: its packed 5-bit field (run,
/// advances), its value and whether it ends the block; `None` when the lookup does not hold
/// the whole symbol with its value, or the value does not fit a field of `value_bits`.
fn pair_field(entry: Entry, value_bits: u32) -> Option<(u32, i32, bool)> {
    if !entry.has_value() {
        return None;
    }
    let (run, size) = (entry.symbol() >> 4, entry.symbol() & 15);
    match (run, size) {
        (0, 0) => Some((0, 0, true)),
        (15, 0) => Some((15 | 16, 0, false)),
        (_, 0) => None,
        _ if size < value_bits => Some((run | 16, entry.value(), false)),
        _ => None,
    }
}

impl AcTable {
    pub fn new(single: Table) -> AcTable {
        let mut pairs = Box::new([0u32; 1 << LOOKUP_BITS]);
        let mask = (1u32 << LOOKUP_BITS) - 1;
        for (window, slot) in pairs.iter_mut().enumerate() {
            let first = single.lookup[window];
            let Some((field1, value1, ends)) = pair_field(first, 9) else {
                continue;
            };
            let used = first.used();
            let mut entry = used | field1 << 6 | (value1 as u32 & 0x1FF) << 23;
            if ends {
                *slot = entry | PAIR_ENDS;
                continue;
            }
            // The rest of the window, if it holds a whole second symbol.
            let next = single.lookup[((window as u32) << used & mask) as usize];
            let used2 = next.used();
            if used + used2 <= LOOKUP_BITS
                && let Some((field2, value2, ends2)) = pair_field(next, 6)
            {
                entry = (entry & !15) | (used + used2) | field2 << 11;
                entry |= (value2 as u32 & 0x3F) << 17;
                if ends2 {
                    entry |= PAIR_ENDS;
                }
            }
            *slot = entry;
        }
        AcTable { single, pairs }
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

    /// Tops the buffer up to at least 56 bits. When the bytes that go in hold no FF, they go in
    /// from one eight-byte read, without a branch on how many fit: the byte that does not fit
    /// whole still goes in as far as it fits, which is harmless, because the bits past `count`
    /// are either zero or the same stream bits a later refill writes again. The decoding loop
    /// can then refill on every step, instead of on a branch that the varying code lengths
    /// make hard to predict.
    #[inline]
    fn refill(&mut self) {
        if let Some(chunk) = self.data.get(self.pos..self.pos + 8)
            && !self.at_marker
        {
            let word = u64::from_be_bytes(chunk.try_into().unwrap());
            let inverted = !word;
            let has_ff =
                inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
            // The bytes that go in: `fit` whole ones and the part of the next that fits.
            let fit = (63 - self.count) >> 3;
            if has_ff >> (56 - 8 * fit) == 0 {
                self.buf |= word >> self.count;
                self.pos += fit as usize;
                self.count |= 56;
                return;
            }
        }
        self.refill_bytes();
    }

    /// The refill near an FF byte or the end: a byte at a time, unstuffing.
    #[inline(never)]
    fn refill_bytes(&mut self) {
        while self.count < 56 {
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
    #[inline(always)]
    pub fn symbol(&mut self, table: &Table) -> Result<Symbol, Malformed> {
        if self.count < 32 {
            self.refill();
        }
        let e = table.lookup[(self.buf >> (64 - LOOKUP_BITS)) as usize];
        let symbol = e.symbol();
        let (run, size) = (symbol >> 4, symbol & 15);
        if e.has_value() {
            self.consume(e.used());
            return Ok(Symbol {
                run,
                size,
                value: e.value(),
            });
        }
        let symbol = if e.used() != 0 {
            self.consume(e.used());
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

    /// The next one or two AC symbols as one pair entry, not yet consumed, or `None` when the
    /// next symbol needs [`Bits::symbol`] (a long code or a large value).
    #[inline]
    pub fn peek_pair(&mut self, table: &AcTable) -> Option<Pair> {
        if self.count < LOOKUP_BITS {
            self.refill();
        }
        // The lookup reads the bits already there, so the refill stays off its chain.
        let e = table.pairs[(self.buf >> (64 - LOOKUP_BITS)) as usize];
        self.refill();
        (e != 0).then_some(Pair(e))
    }

    /// Consumes a peeked pair's bits. The shift takes the whole entry as its count, which
    /// costs the decoding chain no masking step (the entry's bits 4–5 are clear).
    #[inline]
    pub fn take_pair(&mut self, pair: Pair) {
        self.buf = self.buf.wrapping_shl(pair.0);
        self.count -= pair.0 & 15;
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

    /// The luminance AC table of the JPEG specification (Annex K.3): its 37 short codes with
    /// their symbols, the 16-bit codes with the other symbols in order.
    fn annex_k_ac_table() -> Table {
        let counts = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
        let mut symbols = vec![
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1,
            0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82u8,
        ];
        for run in 0..16u8 {
            for size in 1..=10u8 {
                if !symbols.contains(&(run << 4 | size)) {
                    symbols.push(run << 4 | size);
                }
            }
        }
        Table::new(&counts, &symbols).unwrap()
    }

    /// A symbol as the position steps of a pair entry see it: (offset, advance, value).
    fn step_of(s: &Symbol) -> (usize, usize, i32) {
        match (s.run, s.size) {
            (0, 0) => (0, 0, 0),
            (15, 0) => (15, 16, 0),
            (run, _) => (run as usize, run as usize + 1, s.value),
        }
    }

    #[test]
    fn pair_entries_decode_what_single_symbols_decode() {
        // Random bits pick each code with the probability of its length, as real data does
        // roughly; an FF byte is stuffed so the stream has no marker until its end.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut data = Vec::new();
        while data.len() < 64 * 1024 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.push((seed >> 24) as u8);
            if data.last() == Some(&0xFF) {
                data.push(0x00);
            }
        }
        data.extend([0xFF, 0xD9]);
        let ac = AcTable::new(annex_k_ac_table());

        let mut single = Bits::new(&data, 0);
        let mut expected = Vec::new();
        while expected.len() < 100_000 {
            match single.symbol(&ac.single) {
                Ok(s) => expected.push(step_of(&s)),
                Err(Malformed) => break, // the one unused 16-bit code
            }
        }
        let (mut paired, mut got, mut pairs_taken) = (Bits::new(&data, 0), Vec::new(), 0);
        while got.len() < expected.len() {
            let Some(pair) = paired.peek_pair(&ac) else {
                match paired.symbol(&ac.single) {
                    Ok(s) => got.push(step_of(&s)),
                    Err(Malformed) => break,
                }
                continue;
            };
            paired.take_pair(pair);
            pairs_taken += 1;
            let (first, second) = (pair.first(), pair.second());
            got.push((first.offset, first.advance, first.value));
            if first.advance == 0 {
                assert!(pair.ends(), "an end of block ends its entry");
                continue;
            }
            if second.advance != 0 || pair.ends() {
                got.push((second.offset, second.advance, second.value));
            } else {
                assert_eq!((second.offset, second.value), (0, 0), "no second symbol");
            }
        }
        got.truncate(expected.len());
        assert!(expected.len() > 10_000, "{} symbols", expected.len());
        assert!(pairs_taken > expected.len() / 3, "{pairs_taken} pairs");
        assert_eq!(got, expected);
    }

    #[test]
    fn extend_gives_negative_values_below_half() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0b010, 3), -5);
        assert_eq!(extend(0b110, 3), 6);
    }
}
