//! A guard that follows the framing of an HTTP/1 connection on its raw bytes, alongside hyper.
//!
//! hyper quietly repairs two ambiguous framings: given both Content-Length and
//! Transfer-Encoding it drops the length, and it merges duplicate Content-Length headers that
//! agree. Both are how request smuggling starts, so the ingress refuses them instead of guessing,
//! but hyper's parsed request no longer shows them. So [`Guarded`] reads each request head
//! itself (httparse), skips bodies by length or chunk, and queues one [`Verdict`] per head, in
//! order; the proxy takes the verdict of each request as it serves it. Where it cannot follow (an
//! upgrade, CONNECT, a malformed chunk) it stops judging the connection, and hyper's own handling
//! (which is safe, only lenient) stands.
//!
//! The guard hands hyper a head only once it is complete and judged, so hyper only ever parses
//! whole heads that pass. A head hyper would refuse itself (not HTTP, too long a target, too
//! many or too large headers) is refused here instead, line by line as it arrives, with hyper's
//! own limits: hyper is given the end of the input in its place, and the guard writes the
//! ingress's page (with its `x-nullops-error` code) as the connection closes. So every answer
//! the ingress gives carries a code, and hyper's bare 400, 414 and 431 are never seen. Bodies
//! pass through as they come.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use std::future::Future;

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

/// A request head that is refused before hyper reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.1, and why.
    Malformed(String),
    UriTooLong,
    HeadersTooLarge,
}

/// Longest request head taken (hyper's read buffer).
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest request target taken (hyper's limit).
pub const MAX_URI: usize = 65_534;
/// Most headers in a head (hyper's limit).
pub const MAX_HEADERS: usize = 100;
/// Most verdicts queued ahead of the requests they belong to (pipelining).
const MAX_PENDING: usize = 256;

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
    /// A head was refused: nothing after it is read.
    Refused,
}

/// The framing follower, free of I/O.
#[derive(Debug)]
pub struct Follower {
    state: State,
    head: Vec<u8>,
    /// Lines of the head read so far.
    lines: usize,
    verdicts: Arc<Verdicts>,
}

impl Follower {
    pub fn new(verdicts: Arc<Verdicts>) -> Self {
        Follower { state: State::Head, head: Vec::new(), lines: 0, verdicts }
    }

    /// Follows `chunk`, the next bytes the client sent, and appends to `out` what hyper may be
    /// given now: bodies as they come, a head once it is complete and judged (its bytes are
    /// held until then). A head refused is never given.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), HeadError> {
        let mut input = chunk;
        while let Some((&byte, rest)) = input.split_first() {
            match self.state {
                State::Refused => return Ok(()),
                State::Opaque => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Body(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                    continue;
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = n - take as u64;
                    self.state = State::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data(left) });
                    continue;
                }
                State::Head => {
                    if let Err(error) = self.head_byte(byte, out) {
                        self.state = State::Refused;
                        return Err(error);
                    }
                }
                State::Chunked(chunk) => {
                    out.push(byte);
                    self.state = chunk_byte(chunk, byte).map_or(State::Opaque, |c| c.map_or(State::Head, State::Chunked));
                }
            }
            input = rest;
        }
        Ok(())
    }

    /// Takes one byte of a head; a complete head that passes goes to `out`, and a head hyper
    /// would refuse is refused as soon as a line of it shows it.
    fn head_byte(&mut self, byte: u8, out: &mut Vec<u8>) -> Result<(), HeadError> {
        // Empty lines before a request line are allowed (RFC 9112 §2.2).
        if self.head.is_empty() && (byte == b'\r' || byte == b'\n') {
            out.push(byte);
            return Ok(());
        }
        self.head.push(byte);
        if self.head.len() > MAX_HEAD {
            return Err(if self.head.contains(&b'\n') { HeadError::HeadersTooLarge } else { HeadError::UriTooLong });
        }
        if byte != b'\n' {
            return Ok(());
        }
        self.lines += 1;
        // The request line, the headers and the empty line.
        if self.lines > MAX_HEADERS + 2 {
            return Err(HeadError::HeadersTooLarge);
        }
        if self.head.ends_with(b"\r\n\r\n") || self.head.ends_with(b"\n\n") {
            let head = std::mem::take(&mut self.head);
            self.lines = 0;
            self.state = self.judge(&head)?;
            out.extend_from_slice(&head);
            return Ok(());
        }
        // A line ended: what is there so far must still read as the start of a request.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        httparse::Request::new(&mut headers).parse(&self.head).map(|_| ()).map_err(parse_error)
    }

    /// Queues the verdict on a complete head and says how its body is framed.
    fn judge(&mut self, head: &[u8]) -> Result<State, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("the head ends too early".into())),
            Err(e) => return Err(parse_error(e)),
        }
        let target = request.path.unwrap_or("");
        if target.len() > MAX_URI {
            return Err(HeadError::UriTooLong);
        }
        if hyper::Uri::try_from(target).is_err() {
            return Err(HeadError::Malformed("its target is not a URI".into()));
        }
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
            return Ok(State::Opaque);
        }
        if let Some(last) = encodings.last() {
            let chunked = last.rsplit(|&b| b == b',').next().is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            return Ok(if chunked { State::Chunked(Chunk::Size { size: 0, digits: 0 }) } else { State::Opaque });
        }
        Ok(match lengths.first() {
            None => State::Head,
            Some(value) => match std::str::from_utf8(value.trim_ascii()).ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Opaque,
            },
        })
    }
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::HeadersTooLarge,
        e => HeadError::Malformed(e.to_string()),
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
    /// What the follower released that hyper has not read yet.
    released: Vec<u8>,
    /// Once a head is refused: the answer to write as the connection closes. Hyper reads
    /// nothing more.
    refusal: Option<Closing>,
}

/// How far closing a refused connection got.
enum Closing {
    /// Writing the answer: its bytes, and how many are written.
    Answer(Vec<u8>, usize),
    /// The answer is out and the write side shut: the client's unread bytes are read and
    /// dropped until it closes, `LINGER_BYTES` or `LINGER` (closing with them unread would
    /// reset the connection and could destroy the answer before the client reads it).
    Lingering {
        read: usize,
        until: Pin<Box<tokio::time::Sleep>>,
    },
    Done,
}

/// Bytes read from the client at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Bounds on reading what a refused client still sends.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

impl<IO> Guarded<IO> {
    pub fn new(inner: IO, verdicts: Arc<Verdicts>) -> Self {
        Guarded { inner, follower: Follower::new(verdicts), released: Vec::new(), refusal: None }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.released.is_empty() {
                let n = this.released.len().min(buf.remaining());
                buf.put_slice(&this.released[..n]);
                this.released.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.refusal.is_some() {
                // The end of the input, as far as hyper is told.
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut scratch);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client's end of the input; a head it left unfinished is not hyper's.
                return Poll::Ready(Ok(()));
            }
            if let Err(error) = this.follower.feed(read.filled(), &mut this.released) {
                this.refusal = Some(Closing::Answer(crate::pages::Refusal::BadHead(error).raw(), 0));
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A refused head is answered last, after whatever hyper answered before it.
        loop {
            match this.refusal.as_mut() {
                None | Some(Closing::Done) => return Pin::new(&mut this.inner).poll_shutdown(cx),
                Some(Closing::Answer(page, written)) if *written < page.len() => {
                    match std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &page[*written..])) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => *written += n,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                Some(Closing::Answer(..)) => {
                    std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
                    std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.refusal = Some(Closing::Lingering { read: 0, until: Box::pin(tokio::time::sleep(LINGER)) });
                }
                Some(Closing::Lingering { read, until }) => {
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() && *read + buf.filled().len() < LINGER_BYTES => *read += buf.filled().len(),
                        // The client closed, sent too much, or failed: done.
                        Poll::Ready(_) => this.refusal = Some(Closing::Done),
                        Poll::Pending => {
                            std::task::ready!(until.as_mut().poll(cx));
                            this.refusal = Some(Closing::Done);
                        }
                    }
                }
            }
        }
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

    /// `stream` fed in pieces of `piece` bytes: the verdicts, what was released to hyper and
    /// the refusal, if any.
    fn follow(stream: &[u8], piece: usize) -> (Vec<Verdict>, Vec<u8>, Option<HeadError>) {
        let queue = Arc::new(Verdicts::default());
        let mut follower = Follower::new(queue.clone());
        let mut released = Vec::new();
        let mut refused = None;
        for part in stream.chunks(piece) {
            if let Err(e) = follower.feed(part, &mut released) {
                refused = Some(e);
                break;
            }
        }
        (std::iter::from_fn(|| queue.next()).collect(), released, refused)
    }

    fn verdicts(stream: &[u8], piece: usize) -> Vec<Verdict> {
        follow(stream, piece).0
    }

    #[test]
    fn what_is_followed_is_released_whole_and_in_order() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        for piece in [1, 5, stream.len()] {
            assert_eq!(follow(stream, piece).1, stream.to_vec(), "in pieces of {piece}");
        }
        // A head is held until it is complete.
        assert_eq!(follow(b"GET / HTTP/1.1\r\nHost: a\r\n", 3).1, b"");
    }

    #[test]
    fn heads_hyper_would_refuse_are_refused_here_and_never_released() {
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        let cases: [(Vec<u8>, HeadError); 4] = [
            ([good.clone(), b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec()].concat(), HeadError::Malformed("invalid header name".into())),
            ([b"GET /".to_vec(), vec![b'a'; MAX_HEAD], b" HTTP/1.1\r\n\r\n".to_vec()].concat(), HeadError::UriTooLong),
            ([b"GET / HTTP/1.1\r\nX: ".to_vec(), vec![b'b'; MAX_HEAD], b"\r\n\r\n".to_vec()].concat(), HeadError::HeadersTooLarge),
            (
                [b"GET / HTTP/1.1\r\n".to_vec(), (0..MAX_HEADERS + 1).flat_map(|i| format!("X-{i}: 1\r\n").into_bytes()).collect(), b"\r\n".to_vec()].concat(),
                HeadError::HeadersTooLarge,
            ),
        ];
        for (stream, error) in cases {
            for piece in [7, 4096] {
                let (_, released, refused) = follow(&stream, piece);
                assert_eq!(refused.as_ref(), Some(&error), "in pieces of {piece}");
                // Only what came before the refused head reaches hyper.
                assert!(released.is_empty() || released == good, "released {} bytes", released.len());
            }
        }
        // A request line with a byte no method has is refused as soon as its line ends.
        assert!(matches!(follow(b"G\x01T / HTTP/1.1\r\n", 1).2, Some(HeadError::Malformed(_))));
        assert!(matches!(follow(b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 4).2, Some(HeadError::Malformed(_))));
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
