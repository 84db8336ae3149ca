//! One transfer connection as both ends use it: control messages and frames over a buffered
//! stream, each step bounded by the idle limit.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};

use super::wire::{self, Frame, Msg};
use super::TransferError;

pub(crate) struct Session<S> {
    pub stream: BufStream<S>,
    pub buf: BytesMut,
    pub idle: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `stream` with read and write buffers of these sizes.
    pub fn new(stream: S, read_buf: usize, write_buf: usize, idle: Duration) -> Self {
        Session {
            stream: BufStream::with_capacity(read_buf, write_buf, stream),
            buf: BytesMut::new(),
            idle,
        }
    }

    /// Sends one control message and flushes it.
    pub async fn say(&mut self, msg: &Msg) -> Result<(), TransferError> {
        let idle = self.idle;
        let write = async {
            wire::write_msg(&mut self.stream, msg).await?;
            self.stream.flush().await.map_err(TransferError::Net)
        };
        tokio::time::timeout(idle, write)
            .await
            .map_err(|_| TransferError::Idle(idle))?
    }

    /// The next frame; an `error` message from the peer becomes [`TransferError::Peer`].
    pub async fn frame(&mut self) -> Result<Frame, TransferError> {
        match tokio::time::timeout(self.idle, wire::read_frame(&mut self.stream, &mut self.buf))
            .await
            .map_err(|_| TransferError::Idle(self.idle))??
        {
            Frame::Control(Msg::Error { message }) => Err(TransferError::Peer(message)),
            frame => Ok(frame),
        }
    }

    /// The next control message (file data here is out of place).
    pub async fn hear(&mut self) -> Result<Msg, TransferError> {
        match self.frame().await? {
            Frame::Control(msg) => Ok(msg),
            Frame::Data(_) => Err(TransferError::Protocol(
                "file data where a control message belongs".into(),
            )),
        }
    }

    /// After a failed write: what the peer said before it closed, if anything.
    pub async fn last_word(&mut self) -> Option<TransferError> {
        let read = wire::read_frame(&mut self.stream, &mut self.buf);
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(Frame::Control(Msg::Error { message }))) => Some(TransferError::Peer(message)),
            _ => None,
        }
    }
}
