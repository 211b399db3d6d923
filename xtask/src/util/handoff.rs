//! Reading on one core while writing on the other: the binary inflates on this thread (the
//! floor of a build) while another thread writes what has come out so far, so writing costs
//! no time of its own. Memory stays flat: a few chunks are in flight, and they are reused.

use std::io::{self, Read};
use std::sync::mpsc;

use anyhow::bail;

/// Bytes handed over at a time, and how many may wait: enough to keep both threads busy.
const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// What `reader` gives, in order, on the consuming thread.
pub struct Chunks {
    full: mpsc::Receiver<(Vec<u8>, usize)>,
    empty: mpsc::SyncSender<Vec<u8>>,
}

impl Chunks {
    /// Hands every chunk to `each` until the reader's end (or its failure, which the reading
    /// side reports).
    pub fn for_each(self, mut each: impl FnMut(&[u8]) -> anyhow::Result<()>) -> anyhow::Result<()> {
        for (chunk, filled) in self.full.iter() {
            each(&chunk[..filled])?;
            // The reader allocates another if it gets none back.
            let _ = self.empty.try_send(chunk);
        }
        Ok(())
    }
}

/// Runs `consume` on a new thread, giving it what `reader` gives as this thread reads it.
/// A read error wins over what the consumer then says (it saw an early end); a consumer that
/// stops stops the reading too.
pub fn relay<T: Send>(
    reader: &mut dyn Read,
    consume: impl FnOnce(Chunks) -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let (full_tx, full_rx) = mpsc::sync_channel(IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::sync_channel(IN_FLIGHT + 1);
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            consume(Chunks {
                full: full_rx,
                empty: empty_tx,
            })
        });
        let fed = feed(reader, full_tx, empty_rx);
        let consumed = consumer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the writing thread panicked")));
        match fed {
            Ok(()) => consumed,
            Err(Fed::ConsumerGone) => {
                consumed.and_then(|_| bail!("the writing thread stopped before the end"))
            }
            Err(Fed::Read(err)) => Err(err.into()),
        }
    })
}

enum Fed {
    Read(io::Error),
    ConsumerGone,
}

fn feed(
    reader: &mut dyn Read,
    full: mpsc::SyncSender<(Vec<u8>, usize)>,
    empty: mpsc::Receiver<Vec<u8>>,
) -> Result<(), Fed> {
    loop {
        // A new buffer is calloc'd: no fill loop, which a debug build (`cargo xtask`) runs slowly.
        super::interrupt::check_io().map_err(Fed::Read)?;
        let mut chunk = empty.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fed::Read(e)),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        full.send((chunk, filled)).map_err(|_| Fed::ConsumerGone)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_gets_every_byte_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        let got = relay(&mut &data[..], |chunks| {
            let mut got = Vec::new();
            chunks.for_each(|c| {
                got.extend_from_slice(c);
                Ok(())
            })?;
            Ok(got)
        })
        .unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn a_read_error_is_reported_and_a_consumer_error_stops_the_reading() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("the zip lied"));
                }
                self.0 -= 1;
                Ok(buf.len().min(1000))
            }
        }
        let err = relay(&mut Failing(3000), |chunks| -> anyhow::Result<()> {
            chunks.for_each(|_| Ok(()))?;
            bail!("saw an early end")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the zip lied");

        // The consumer gives up at the first chunk; the reader would go on for ever.
        let mut endless = io::repeat(7);
        let err = relay(&mut endless, |chunks| -> anyhow::Result<()> {
            chunks.for_each(|_| bail!("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}
