//! A guard that follows the framing of an HTTP/1 connection on its raw bytes, alongside hyper.
//!
//! hyper quietly repairs two ambiguous framings: given both Content-Length and
//! Transfer-Encoding it drops the length, and it merges duplicate Content-Length headers that
//! agree. Both are how request smuggling starts, so the ingress refuses them instead of guessing,
//! but hyper's parsed request no longer shows them. So [`Guarded`] reads each request head
//! itself (httparse), skips bodies by length or chunk, and queues one [`Verdict`] per head, in
//! order; the proxy takes the verdict of each request as it serves it. Where it cannot follow (an
//! upgrade, CONNECT, anything malformed) it stops judging the connection, and hyper's own handling
//! (which is safe, only lenient) stands.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request head that frames its body ambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    ContentLengthAndTransferEncoding,
    DuplicateContentLength,
}

impl Ambiguity {
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguity::ContentLengthAndTransferEncoding => "the request has both Content-Length and Transfer-Encoding",
            Ambiguity::DuplicateContentLength => "the request has more than one Content-Length",
        }
    }
}

pub type Verdict = Result<(), Ambiguity>;

/// Longest request head followed; hyper refuses longer ones itself.
const MAX_HEAD: usize = 64 * 1024;
/// Most verdicts queued ahead of the requests they belong to (pipelining).
const MAX_PENDING: usize = 256;
/// Most headers in a head; hyper's own limit is 100.
const MAX_HEADERS: usize = 128;

/// The verdicts of one connection's requests, oldest first.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<VecDeque<Verdict>>);

impl Verdicts {
    /// The verdict of the next request hyper hands over; `None` once the guard stopped judging.
    pub fn next(&self) -> Option<Verdict> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    fn push(&self, verdict: Verdict) -> bool {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAX_PENDING {
            return false;
        }
        queue.push_back(verdict);
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size {
        size: u64,
        digits: u8,
    },
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// A trailer line; `empty` while nothing but its line end has been seen.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Chunked(Chunk),
    /// No longer followed.
    Opaque,
}

/// The framing follower, free of I/O.
#[derive(Debug)]
pub struct Follower {
    state: State,
    head: Vec<u8>,
    verdicts: Arc<Verdicts>,
}

impl Follower {
    pub fn new(verdicts: Arc<Verdicts>) -> Self {
        Follower { state: State::Head, head: Vec::new(), verdicts }
    }

    /// Follows `input`, the next bytes the client sent.
    pub fn feed(&mut self, mut input: &[u8]) {
        while let Some((&byte, rest)) = input.split_first() {
            match self.state {
                State::Opaque => return,
                State::Body(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                    continue;
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = State::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data(left) });
                    continue;
                }
                State::Head => self.head_byte(byte),
                State::Chunked(chunk) => self.state = chunk_byte(chunk, byte).map_or(State::Opaque, |c| c.map_or(State::Head, State::Chunked)),
            }
            input = rest;
        }
    }

    fn head_byte(&mut self, byte: u8) {
        // Empty lines before a request line are allowed (RFC 9112 §2.2).
        if self.head.is_empty() && (byte == b'\r' || byte == b'\n') {
            return;
        }
        self.head.push(byte);
        if self.head.len() > MAX_HEAD {
            self.state = State::Opaque;
            return;
        }
        if self.head.ends_with(b"\r\n\r\n") || self.head.ends_with(b"\n\n") {
            let head = std::mem::take(&mut self.head);
            self.state = self.judge(&head);
        }
    }

    /// Queues the verdict on a complete head and says how its body is framed.
    fn judge(&mut self, head: &[u8]) -> State {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = request.parse(head) else { return State::Opaque };
        let named = |name: &'static str| request.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect::<Vec<&[u8]>>();
        let (lengths, encodings) = (named("content-length"), named("transfer-encoding"));
        let upgrade = request.method == Some("CONNECT") || !named("upgrade").is_empty();
        let verdict = match (lengths.len(), encodings.is_empty()) {
            (1.., false) => Err(Ambiguity::ContentLengthAndTransferEncoding),
            (2.., true) => Err(Ambiguity::DuplicateContentLength),
            _ => Ok(()),
        };
        if !self.verdicts.push(verdict) || verdict.is_err() || upgrade {
            // A refused request closes the connection; an upgraded one is no longer HTTP.
            return State::Opaque;
        }
        if let Some(last) = encodings.last() {
            let chunked = last.rsplit(|&b| b == b',').next().is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            return if chunked { State::Chunked(Chunk::Size { size: 0, digits: 0 }) } else { State::Opaque };
        }
        match lengths.first() {
            None => State::Head,
            Some(value) => match std::str::from_utf8(value.trim_ascii()).ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Opaque,
            },
        }
    }
}

/// The chunk state after `byte`: `Ok(None)` when the message ended, `Err` when it is malformed.
fn chunk_byte(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, ()> {
    Ok(Some(match (chunk, byte) {
        (Chunk::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
            if digits >= 16 {
                return Err(());
            }
            let digit = u64::from(char::from(b).to_digit(16).ok_or(())?);
            Chunk::Size { size: size * 16 + digit, digits: digits + 1 }
        }
        (Chunk::Size { size, digits: 1.. }, b';' | b' ' | b'\t') => Chunk::Extension { size },
        (Chunk::Size { size, digits: 1.. }, b'\r') | (Chunk::Extension { size }, b'\r') => Chunk::SizeLf { size },
        (Chunk::Extension { .. }, b'\n') => return Err(()),
        (Chunk::Extension { size }, _) => Chunk::Extension { size },
        (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::Trailer { empty: true },
        (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
        (Chunk::Trailer { empty }, b'\r') => Chunk::TrailerLf { empty },
        (Chunk::Trailer { .. }, b'\n') => return Err(()),
        (Chunk::Trailer { .. }, _) => Chunk::Trailer { empty: false },
        (Chunk::TrailerLf { empty: true }, b'\n') => return Ok(None),
        (Chunk::TrailerLf { empty: false }, b'\n') => Chunk::Trailer { empty: true },
        _ => return Err(()),
    }))
}

/// A connection whose incoming bytes pass through a [`Follower`] on their way to hyper.
pub struct Guarded<IO> {
    inner: IO,
    follower: Follower,
}

impl<IO> Guarded<IO> {
    pub fn new(inner: IO, verdicts: Arc<Verdicts>) -> Self {
        Guarded { inner, follower: Follower::new(verdicts) }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            this.follower.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts on `stream`, fed in pieces of `piece` bytes.
    fn verdicts(stream: &[u8], piece: usize) -> Vec<Verdict> {
        let queue = Arc::new(Verdicts::default());
        let mut follower = Follower::new(queue.clone());
        for part in stream.chunks(piece) {
            follower.feed(part);
        }
        std::iter::from_fn(|| queue.next()).collect()
    }

    #[test]
    fn plain_requests_with_bodies_by_length_and_by_chunk_are_followed() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n\
            \r\nGET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        for piece in [1, 3, 7, stream.len()] {
            assert_eq!(verdicts(stream, piece), vec![Ok(()); 4], "in pieces of {piece}");
        }
    }

    #[test]
    fn ambiguous_framings_are_flagged_even_after_other_requests() {
        let both = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts(both, 5), vec![Err(Ambiguity::ContentLengthAndTransferEncoding)]);
        let mut after = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec();
        after.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(verdicts(&after, 2), vec![Ok(()), Err(Ambiguity::DuplicateContentLength)]);
    }

    #[test]
    fn what_it_cannot_follow_it_stops_judging() {
        // After an upgrade the bytes are no longer HTTP, and a malformed chunk ends following.
        let upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(verdicts(upgrade, 4), vec![Ok(())]);
        let malformed = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(malformed, 4), vec![Ok(())]);
    }
}
