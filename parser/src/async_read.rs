//! Fragments from a tokio [`AsyncRead`] (feature `tokio`): the async twin of
//! [`read_fragments`](crate::read_fragments), 64 KiB reads fed to the sans-I/O
//! [`FragmentReader`]. Only tokio's I/O traits are used; no runtime is started here.

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::fragment::{Fragment, FragmentReader, read_failed, step};
use crate::mkv::MkvError;

/// Reads fragments from `source` (a GetMedia body, a file, a socket).
#[derive(Debug)]
pub struct AsyncFragments<R> {
    source: R,
    reader: FragmentReader,
    buf: Vec<u8>,
    at_eof: bool,
    done: bool,
}

impl<R: AsyncRead + Unpin> AsyncFragments<R> {
    pub fn new(source: R) -> Self {
        AsyncFragments {
            source,
            reader: FragmentReader::new(),
            buf: vec![0; 64 * 1024],
            at_eof: false,
            done: false,
        }
    }

    /// The next fragment, `None` at the end of the input. A failed read is a
    /// [`MkvErrorKind::Truncated`](crate::MkvErrorKind::Truncated) error, after which the reader
    /// is done.
    pub async fn next(&mut self) -> Option<Result<Fragment, MkvError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(item) = step(&mut self.reader, self.at_eof, &mut self.done) {
                return item;
            }
            match self.source.read(&mut self.buf).await {
                Ok(0) => self.at_eof = true,
                Ok(n) => self.reader.push(&self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(read_failed(&self.reader, &e)));
                }
            }
        }
    }
}
