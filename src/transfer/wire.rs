//! The transfer protocol's bytes: the magic/version header, then frames of
//! `[kind u8][len u32 BE][payload]`. Control messages are JSON objects (one typed enum, shared by
//! both ends, easy to read in a capture and to write from a test); file data is raw bytes or a
//! zstd-compressed chunk. Every length is checked against a limit before anything is allocated.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::TransferError;

/// What the sender writes first, whichever side connected.
pub const MAGIC: &[u8; 8] = b"SOCKITXF";
/// The protocol version after the magic.
pub const VERSION: u8 = 1;
/// Most bytes of file data in one frame (after decompression too).
pub const MAX_CHUNK: usize = 1 << 20;
/// Most bytes of one control message (an offer of many files is the big one).
pub const MAX_CONTROL: usize = 16 << 20;

const KIND_CONTROL: u8 = 0;
const KIND_DATA: u8 = 1;
const KIND_ZSTD: u8 = 2;

/// A control message. `index` always names an entry of the offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Sender → receiver, first. `spake` is the sender's SPAKE2 message when it has a password.
    Hello {
        version: u8,
        auth: bool,
        spake: Option<String>,
        compress: bool,
    },
    /// Receiver → sender. `spake` is the receiver's SPAKE2 message when both use a password.
    Welcome {
        version: u8,
        auth: bool,
        spake: Option<String>,
    },
    /// Each side's proof that it derived the same key (sender's first), hex.
    Confirm { mac: String },
    /// Sender → receiver: everything it will send.
    Offer { entries: Vec<Entry> },
    /// Receiver → sender: what to do with each file of the offer.
    Plan { files: Vec<Planned> },
    /// Sender → receiver: the data of entry `index` follows from byte `offset`.
    File { index: usize, offset: u64 },
    /// Sender → receiver: entry `index` is complete; the blake3 digest of the whole file.
    End { index: usize, blake3: String },
    /// Sender → receiver: entry `index` cannot be sent after all (it changed or failed to read).
    Abort { index: usize, reason: String },
    /// Sender → receiver: nothing more follows.
    Done,
    /// Receiver → sender: the outcome of every file it was sent.
    Result { files: Vec<FileResult> },
    /// Either side, then it closes.
    Error { message: String },
}

/// One thing the sender offers: a file or a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes (0 for folders).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time: seconds since the epoch, and nanoseconds.
    pub mtime: i64,
    pub mtime_nsec: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
}

/// The receiver's decision for one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    pub index: usize,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Send from `offset` (what the receiver already holds of it).
    Send { offset: u64 },
    /// Already there, whole (same size and time).
    Skip,
    /// Will not be taken.
    Refuse { reason: String },
}

/// How one file ended at the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileResult {
    pub index: usize,
    pub ok: bool,
    pub error: Option<String>,
}

/// One frame as read.
#[derive(Debug)]
pub enum Frame {
    Control(Msg),
    /// File data, decompressed.
    Data(Bytes),
}

/// Writes the header the sender begins with.
pub async fn write_magic<W: AsyncWrite + Unpin>(w: &mut W) -> Result<(), TransferError> {
    let mut head = [0u8; 9];
    head[..8].copy_from_slice(MAGIC);
    head[8] = VERSION;
    w.write_all(&head).await.map_err(TransferError::Net)
}

/// Writes one control message.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Msg) -> Result<(), TransferError> {
    let body = serde_json::to_vec(msg).map_err(|e| TransferError::Protocol(e.to_string()))?;
    write_frame(w, KIND_CONTROL, &body).await
}

/// Writes one chunk of file data, compressed when `compressed` says the bytes are zstd.
pub async fn write_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    compressed: bool,
) -> Result<(), TransferError> {
    let kind = if compressed { KIND_ZSTD } else { KIND_DATA };
    write_frame(w, kind, data).await
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    body: &[u8],
) -> Result<(), TransferError> {
    write_head(w, kind, body.len()).await?;
    w.write_all(body).await.map_err(TransferError::Net)
}

/// The header of a raw data frame of `len` bytes, for a body the caller sends itself (sendfile).
pub async fn write_data_head<W: AsyncWrite + Unpin>(
    w: &mut W,
    len: usize,
) -> Result<(), TransferError> {
    write_head(w, KIND_DATA, len).await
}

async fn write_head<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    len: usize,
) -> Result<(), TransferError> {
    let len = u32::try_from(len).map_err(|_| TransferError::Protocol("frame too large".into()))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head).await.map_err(TransferError::Net)
}

/// Reads the 9-byte header, or says what came instead (`Err(first bytes)` for a stream that is
/// not this protocol, such as the tutorial's md5 sender).
pub async fn read_magic<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Result<(), [u8; 8]>, TransferError> {
    let mut head = [0u8; 8];
    read_exact(r, &mut head, "the header").await?;
    if &head != MAGIC {
        return Ok(Err(head));
    }
    let mut version = [0u8; 1];
    read_exact(r, &mut version, "the header").await?;
    if version[0] != VERSION {
        return Err(TransferError::Protocol(format!(
            "the peer speaks version {} of the protocol, this sockit {VERSION}",
            version[0]
        )));
    }
    Ok(Ok(()))
}

/// Reads one frame. `buf` is reused for data so the receiver allocates no more per chunk than
/// the chunk.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Frame, TransferError> {
    let mut head = [0u8; 5];
    read_exact(r, &mut head, "a frame").await?;
    let (kind, len) = parse_head(head)?;
    // Read into spare capacity: zeroing a megabyte per chunk first cost a tenth of the CPU.
    buf.clear();
    buf.reserve(len);
    let mut body = (&mut *r).take(len as u64);
    while buf.len() < len {
        match body.read_buf(buf).await {
            Ok(0) => {
                return Err(TransferError::Cut(
                    "the connection closed in a frame".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(TransferError::Net(e)),
        }
    }
    parse_body(kind, buf.split().freeze())
}

/// A frame header: its kind and length, checked against the kind's limit before anything is
/// allocated for the body.
pub fn parse_head(head: [u8; 5]) -> Result<(u8, usize), TransferError> {
    let kind = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let limit = match kind {
        KIND_CONTROL => MAX_CONTROL,
        KIND_DATA | KIND_ZSTD => MAX_CHUNK,
        other => {
            return Err(TransferError::Protocol(format!(
                "unknown frame kind {other}"
            )));
        }
    };
    if len > limit {
        return Err(TransferError::Protocol(format!(
            "a frame of {len} bytes is over the limit of {limit}"
        )));
    }
    Ok((kind, len))
}

/// A frame's body as the message or data it holds.
pub fn parse_body(kind: u8, body: Bytes) -> Result<Frame, TransferError> {
    match kind {
        KIND_CONTROL => serde_json::from_slice(&body)
            .map(Frame::Control)
            .map_err(|e| TransferError::Protocol(format!("bad control message: {e}"))),
        KIND_DATA => Ok(Frame::Data(body)),
        _ => decompress(&body).map(Frame::Data),
    }
}

/// A zstd chunk back to its bytes, never more than [`MAX_CHUNK`] of them (a decompression bomb
/// fails instead of filling the memory). The frame's header states its size (sockit's sender
/// always writes it): the buffer is that big, not the limit, so a stream of tiny chunks does not
/// cost a megabyte each; a frame that decodes to more than it stated fails.
pub fn decompress(body: &[u8]) -> Result<Bytes, TransferError> {
    let bad = |why: String| TransferError::Protocol(format!("bad compressed chunk: {why}"));
    let size = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) if n <= MAX_CHUNK as u64 => n as usize,
        Ok(Some(n)) => return Err(bad(format!("it states {n} bytes, over the chunk limit"))),
        Ok(None) => return Err(bad("it does not state its size".into())),
        Err(_) => return Err(bad("not a zstd frame".into())),
    };
    zstd::bulk::decompress(body, size)
        .map(Bytes::from)
        .map_err(|e| bad(e.to_string()))
}

async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    what: &str,
) -> Result<(), TransferError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransferError::Cut(
            format!("the connection closed in {what}"),
        )),
        Err(e) => Err(TransferError::Net(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd frame of `data`, with or without its content size in the header.
    fn frame(data: &[u8], state_size: bool) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(state_size))
            .unwrap();
        c.compress(data).unwrap()
    }

    #[test]
    fn decompress_takes_only_what_the_frame_states_within_the_limit() {
        let good = b"compressible ".repeat(10_000);
        assert_eq!(&decompress(&frame(&good, true)).unwrap()[..], &good[..]);
        assert_eq!(decompress(&frame(b"", true)).unwrap().len(), 0);
        // Over the chunk limit: refused from the header, before any work.
        let bomb = vec![0u8; 64 * 1024 * 1024];
        assert!(decompress(&frame(&bomb, true)).is_err());
        // A frame that does not say how big it is, or is not zstd at all.
        assert!(decompress(&frame(&good, false)).is_err());
        assert!(decompress(b"not zstd at all").is_err());
        // A frame whose header lies (states fewer bytes than it holds) fails too: the header's
        // size field is patched down (a 2-byte field holds the size less 256).
        let mut small = frame(&[7u8; 1000], true);
        let pos = small
            .windows(2)
            .position(|w| w == (1000u16 - 256).to_le_bytes())
            .expect("a 2-byte content size in the header");
        small[pos..pos + 2].copy_from_slice(&(900u16 - 256).to_le_bytes());
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&small).ok(),
            Some(Some(900))
        );
        assert!(decompress(&small).is_err());
    }
}
