//! One LZ4 block decoded whole, with the end-of-block rules of the kernel's
//! `LZ4_decompress_safe` (`lib/lz4/lz4_decompress.c`): the block must decode to exactly the
//! length the extent says, using all of its input. The kernel may decode less of a block (only
//! what a read needs), so this is at least as strict as any read of it: a block damaged
//! anywhere is refused, as the kernel refuses it as soon as a read reaches the damage.

use anyhow::{bail, ensure};

/// The last 5 bytes of a block are literals (`LASTLITERALS`).
const LAST_LITERALS: usize = 5;
/// A match starts at least 12 bytes before the end (`MFLIMIT`).
const MATCH_LIMIT: usize = 12;
/// The bytes of input a sequence after a literal run needs at least: an offset (2), a token
/// (1) and the last literals (`2 + 1 + LASTLITERALS`).
const SEQUENCE_TAIL: usize = 2 + 1 + LAST_LITERALS;
const MIN_MATCH: usize = 4;

/// `input` decoded into exactly `len` bytes.
pub fn decode_block(input: &[u8], len: usize) -> anyhow::Result<Vec<u8>> {
    let short = || anyhow::anyhow!("the LZ4 stream ends early");
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let mut at = 0usize;
    let count = |at: &mut usize, base: usize| -> anyhow::Result<usize> {
        let mut n = base;
        if base == 15 {
            loop {
                let b = *input.get(*at).ok_or_else(short)?;
                *at += 1;
                n = n.checked_add(usize::from(b)).ok_or_else(short)?;
                if b != 255 {
                    break;
                }
            }
        }
        Ok(n)
    };
    loop {
        let token = *input.get(at).ok_or_else(short)?;
        at += 1;
        let literals = count(&mut at, usize::from(token >> 4))?;
        let literals_end = at.checked_add(literals).ok_or_else(short)?;
        let out_end = out.len().checked_add(literals).ok_or_else(short)?;
        // The kernel's test for the last literal run: past these limits it must be the last.
        let last = out_end > len.saturating_sub(MATCH_LIMIT)
            || literals_end > input.len().saturating_sub(SEQUENCE_TAIL);
        if last {
            ensure!(
                literals_end == input.len() && out_end <= len,
                "the LZ4 stream's last literals do not end it (input {literals_end} of {}, \
                 output {out_end} of {len})",
                input.len()
            );
            out.extend_from_slice(&input[at..]);
            break;
        }
        out.extend_from_slice(&input[at..literals_end]);
        at = literals_end;
        let offset = usize::from(u16::from_le_bytes([input[at], input[at + 1]]));
        at += 2;
        ensure!(
            offset != 0 && offset <= out.len(),
            "the LZ4 stream refers back {offset} bytes, before its start"
        );
        let length = count(&mut at, usize::from(token & 15))?
            .checked_add(MIN_MATCH)
            .ok_or_else(short)?;
        let match_end = out.len().checked_add(length).ok_or_else(short)?;
        if match_end > len.saturating_sub(LAST_LITERALS) {
            bail!("an LZ4 match ends within the last {LAST_LITERALS} bytes of the block");
        }
        for _ in 0..length {
            out.push(out[out.len() - offset]);
        }
    }
    ensure!(
        out.len() == len,
        "the LZ4 block decodes to {} bytes, not the {len} its extent holds",
        out.len()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as one LZ4 block of literals alone.
    fn literals(text: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        if text.len() < 15 {
            block.push((text.len() as u8) << 4);
        } else {
            block.push(0xF0);
            let mut rest = text.len() - 15;
            while rest >= 255 {
                block.push(255);
                rest -= 255;
            }
            block.push(rest as u8);
        }
        block.extend_from_slice(text);
        block
    }

    /// 16 literals "abcdefghijklmnop", a match of 8 at offset 16, then `tail` as literals.
    fn sixteen_then(tail: &[u8]) -> Vec<u8> {
        let mut stream = vec![0xF4, 1];
        stream.extend_from_slice(b"abcdefghijklmnop");
        stream.extend([16, 0]);
        stream.push((tail.len() as u8) << 4);
        stream.extend_from_slice(tail);
        stream
    }

    #[test]
    fn a_block_decodes_whole_or_not_at_all() {
        let stream = sixteen_then(b"0123456789ABC");
        let whole = b"abcdefghijklmnopabcdefgh0123456789ABC";
        assert_eq!(decode_block(&stream, whole.len()).unwrap(), whole);
        assert!(decode_block(&stream, whole.len() + 1).is_err(), "too short");
        assert!(decode_block(&stream, whole.len() - 1).is_err(), "too long");
        assert!(
            decode_block(&stream[..stream.len() - 1], whole.len()).is_err(),
            "a cut stream"
        );
        let mut trailing = stream.clone();
        trailing.push(0);
        assert!(
            decode_block(&trailing, whole.len()).is_err(),
            "input left over"
        );
        let mut before = stream.clone();
        before[18] = 17;
        assert!(
            decode_block(&before, whole.len()).is_err(),
            "before the start"
        );

        let text = vec![b'x'; 300];
        assert_eq!(decode_block(&literals(&text), 300).unwrap(), text);
        assert!(decode_block(&[0xF0, 255, 255], 10).is_err());
    }

    #[test]
    fn literals_too_near_the_end_must_be_the_last() {
        // 16 literals, a match of 8 that ends 4 bytes before the end, 4 literals: the first
        // run ends within 8 bytes of the input's end, so it must end the block, and does not.
        let stream = sixteen_then(b"wxyz");
        assert!(decode_block(&stream, 28).is_err());
    }
}
