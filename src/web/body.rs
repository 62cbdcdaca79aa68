//! A response body of a few shared chunks, sent as they are: the cached
//! rendering of a snapshot goes out without being copied per scrape.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// The chunks of one response body, in order; its length is known.
#[derive(Debug, Default)]
pub struct Chunks(VecDeque<Bytes>);

impl Chunks {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        Chunks(chunks.into_iter().filter(|c| !c.is_empty()).collect())
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Chunks {
        Chunks::new([b])
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|c| c.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_chunks_arrive_in_order_with_their_length_known() {
        let body = Chunks::new([Bytes::from("ab"), Bytes::new(), Bytes::from("cde")]);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(5));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcde");
    }
}
