//! A lean HTTP/1.1 client: one keep-alive connection per held request, bound to a chosen source
//! address, with a buffer that starts small (512 bytes; 4 KiB, written at connect, for an
//! observer answered round after round), so one process can hold tens of thousands of
//! long-polls. Answers are read whole (Content-Length or chunked).

use std::net::{Ipv4Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Headers beyond these are not expected from any server measured.
const MAX_HEADERS: usize = 32;

/// Bytes a round-after-round connection's buffer holds: an answer up to this size is read into
/// the one allocation the connection has, as long as each [`Answer`] is dropped before the
/// next request (a larger one grows it once).
const BUFFER_BYTES: usize = 4096;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket failed or the server closed it.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP/1.1 as this client reads it.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: BytesMut,
    /// Whether the server will close the connection after it.
    pub closes: bool,
}

impl Answer {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to one server.
pub struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    /// Connects to `server` from `source` (any port).
    pub async fn open(server: SocketAddr, source: Ipv4Addr) -> std::io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: BytesMut::with_capacity(512),
        })
    }

    /// Gives the connection a buffer of [`BUFFER_BYTES`] whose pages are written now, for a
    /// connection that answers round after round. Allocated small and grown at the first
    /// answer that did not fit, the buffers of 10,000 observers took ~11,000 page faults in
    /// this client within one round: the first for lingr's answers (508 bytes), the second for
    /// nchan's (244), whose worst round that was, on the two cores the client shares with the
    /// server. (Not for a herd's one observe each: there it would cost a page fault per
    /// connection inside the measured time, and its answers need a larger buffer anyway.)
    pub fn touch_buffer(&mut self) {
        let mut buffer = BytesMut::with_capacity(BUFFER_BYTES);
        // Written, not `BytesMut::zeroed`: calloc may leave fresh pages untouched.
        buffer.resize(BUFFER_BYTES, 0);
        buffer.clear();
        self.buffer = buffer;
    }

    /// Sends `GET target` with `headers` and reads the answer.
    pub async fn get(
        &mut self,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, HttpError> {
        self.send("GET", target, headers, b"").await
    }

    /// Sends a request and reads its answer.
    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, HttpError> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: bench\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        // condure closes the connection after answering a GET that carries Content-Length: 0.
        if !body.is_empty() || method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> Result<Answer, HttpError> {
        // Each answer starts at the front of the allocation, which the last one's body (split
        // off and dropped) no longer shares: read from where the last one ended, an answer
        // longer than the room left there could grow the buffer though it fits whole.
        if self.buffer.is_empty() {
            // False for a smaller buffer (a herd's), which grows as it needs.
            let _ = self.buffer.try_reclaim(BUFFER_BYTES);
        }
        loop {
            if let Some((status, headers, head_len)) = parse_head(&self.buffer)? {
                self.buffer.advance(head_len);
                let closes = header_in(&headers, "connection", "close");
                let body = if header_in(&headers, "transfer-encoding", "chunked") {
                    self.read_chunked().await?
                } else {
                    let length = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map(|(_, v)| v.parse::<usize>())
                        .transpose()
                        .map_err(|_| HttpError::Malformed("content-length"))?
                        .unwrap_or(0);
                    self.fill(length).await?;
                    self.buffer.split_to(length)
                };
                return Ok(Answer {
                    status,
                    headers,
                    body,
                    closes,
                });
            }
            self.read_more().await?;
        }
    }

    async fn read_chunked(&mut self) -> Result<BytesMut, HttpError> {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(at) = find_crlf(&self.buffer) {
                    break at;
                }
                self.read_more().await?;
            };
            let size_text = std::str::from_utf8(&self.buffer[..line_end])
                .map_err(|_| HttpError::Malformed("chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| HttpError::Malformed("chunk size"))?;
            self.buffer.advance(line_end + 2);
            self.fill(size + 2).await?;
            body.extend_from_slice(&self.buffer[..size]);
            self.buffer.advance(size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads until `length` bytes are buffered, with room for all of them made at once: a
    /// herd's answers are ~120 KiB each, and growing by a page per read cost this client more
    /// CPU than the server spent writing them.
    async fn fill(&mut self, length: usize) -> Result<(), HttpError> {
        if self.buffer.len() < length {
            self.buffer.reserve(length - self.buffer.len());
        }
        while self.buffer.len() < length {
            self.read_more().await?;
        }
        Ok(())
    }

    async fn read_more(&mut self) -> Result<(), HttpError> {
        if self.buffer.capacity() - self.buffer.len() < 256 {
            self.buffer.reserve(4096);
        }
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(HttpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }
}

type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(buffer: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => {
            let status = response.code.ok_or(HttpError::Malformed("status"))?;
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((status, headers, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(HttpError::Malformed("head")),
    }
}

fn header_in(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn find_crlf(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\r\n")
}
