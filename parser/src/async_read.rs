//! Fragments from a tokio [`AsyncRead`] (feature `tokio`): the async twin of
//! [`read_fragments`](crate::read_fragments), 64 KiB reads fed to the sans-I/O
//! [`FragmentReader`]. Only tokio's I/O traits are used; no runtime is started here.

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::fragment::{Fragment, FragmentReader};
use crate::mkv::{MkvError, MkvErrorKind};

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
    /// [`MkvErrorKind::Truncated`] error, after which the reader is done.
    pub async fn next(&mut self) -> Option<Result<Fragment, MkvError>> {
        if self.done {
            return None;
        }
        loop {
            let step = if self.at_eof {
                self.reader.finish()
            } else {
                self.reader.next_fragment()
            };
            match step {
                Ok(Some(fragment)) => return Some(Ok(fragment)),
                Ok(None) if self.at_eof => {
                    self.done = true;
                    return None;
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            match self.source.read(&mut self.buf).await {
                Ok(0) => self.at_eof = true,
                Ok(n) => self.reader.push(&self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(MkvError {
                        offset: self.reader.position(),
                        kind: MkvErrorKind::Truncated,
                        path: String::new(),
                        message: format!("reading the input failed: {e}"),
                    }));
                }
            }
        }
    }
}
