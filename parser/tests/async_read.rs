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
