//! The `tokio` feature's AsyncFragments reads what read_fragments reads.
#![cfg(feature = "tokio")]

mod common;

use common::*;
use timeshard_parser::async_read::AsyncFragments;
use timeshard_parser::read_fragments;
use tokio::io::AsyncWriteExt as _;

#[tokio::test]
async fn async_reads_match_blocking_reads_through_a_small_pipe() {
    for name in AWS_FIXTURES {
        let input = aws_fixture(name);
        let blocking: Vec<_> = read_fragments(&input[..])
            .collect::<Result<_, _>>()
            .expect("valid");
        // A pipe of 7 bytes, written in 3-byte pieces: every read is short.
        let (mut tx, rx) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            for piece in input.chunks(3) {
                tx.write_all(piece).await.expect("write");
            }
        });
        let mut reader = AsyncFragments::new(rx);
        let mut fragments = Vec::new();
        while let Some(f) = reader.next().await {
            fragments.push(f.expect("valid"));
        }
        writer.await.expect("writer");
        assert_eq!(fragments, blocking, "{name}");
    }
}

#[tokio::test]
async fn a_cut_input_is_an_error() {
    let input = aws_fixture(AWS_GET_MEDIA);
    let cut = &input[..input.len() / 2];
    let mut reader = AsyncFragments::new(cut);
    let mut last = None;
    while let Some(f) = reader.next().await {
        last = Some(f);
    }
    assert!(last.expect("something").is_err(), "a truncated document");
}

/// An `AsyncRead` that hands out `max` bytes per read and then fails with a reset.
struct Failing {
    data: Vec<u8>,
    at: usize,
    max: usize,
    fail_at: usize,
}

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at >= self.fail_at {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset",
            )));
        }
        let n = buf
            .remaining()
            .min(self.max)
            .min(self.fail_at - self.at)
            .min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failed_read_ends_with_an_error_after_the_fragments_read() {
    let input = aws_fixture(AWS_MIXED_TAGS);
    let all: Vec<_> = read_fragments(&input[..])
        .collect::<Result<_, _>>()
        .expect("valid");
    assert!(all.len() >= 2);
    let mut reader = AsyncFragments::new(Failing {
        fail_at: input.len() * 3 / 4,
        data: input,
        at: 0,
        max: 1000,
    });
    let mut got = Vec::new();
    let error = loop {
        match reader.next().await {
            Some(Ok(f)) => got.push(f),
            Some(Err(e)) => break e,
            None => panic!("the input ended without the error"),
        }
    };
    assert_eq!(error.kind, timeshard_parser::MkvErrorKind::Truncated);
    assert!(error.message.contains("connection reset"), "{error}");
    assert!(!got.is_empty() && got.len() < all.len());
    assert_eq!(got, all[..got.len()]);
    assert!(reader.next().await.is_none(), "nothing after the error");
}
