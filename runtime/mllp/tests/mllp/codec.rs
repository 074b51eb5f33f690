//! The codec behind tokio-util's `FramedRead`, fed by a reader that returns a few bytes at a time.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use plexus_mllp::{CodecError, Frame, MllpCodec};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::FramedRead;

/// Yields `data` at most `step` bytes per read.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let end = (self.pos + self.step)
            .min(self.data.len())
            .min(self.pos + buf.remaining());
        buf.put_slice(&self.data[self.pos..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

async fn decode_all(data: Vec<u8>, step: usize, max: usize) -> Vec<Result<Frame, CodecError>> {
    let reader = Trickle { data, pos: 0, step };
    FramedRead::new(reader, MllpCodec::new(max)).collect().await
}

fn frame(payload: &[u8]) -> Vec<u8> {
    [&[0x0B][..], payload, &[0x1C, 0x0D]].concat()
}

#[tokio::test]
async fn framed_read_mixed_stream() {
    let wire = [
        b"junk".to_vec(),
        frame(b"MSH|1"),
        frame(b"MSH|too-long-for-the-limit"),
        vec![0x0B],
        b"MSH|2".to_vec(),
        vec![0x1C], // no CR
        frame(b"MSH|3"),
    ]
    .concat();
    for step in [1, 2, 3, 7, 64] {
        let items = decode_all(wire.clone(), step, 10).await;
        let frames: Vec<Frame> = items
            .into_iter()
            .map(|item| item.expect("no error"))
            .collect();
        assert_eq!(frames.len(), 4, "step {step}");
        assert_eq!(frames[0], Frame::Message(Bytes::from_static(b"MSH|1")));
        assert!(
            matches!(&frames[1], Frame::Oversize(o) if o.len == 26),
            "step {step}"
        );
        assert_eq!(frames[2], Frame::Message(Bytes::from_static(b"MSH|2")));
        assert_eq!(frames[3], Frame::Message(Bytes::from_static(b"MSH|3")));
    }
}

#[tokio::test]
async fn framed_read_eof_mid_frame_is_an_error_not_a_panic() {
    let wire = [frame(b"MSH|1"), vec![0x0B], b"MSH|cut".to_vec()].concat();
    let items = decode_all(wire, 3, 1024).await;
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[0], Ok(Frame::Message(_))));
    assert!(matches!(
        &items[1],
        Err(CodecError::Truncated { received: 7 })
    ));
}
